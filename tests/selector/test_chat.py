"""Conversations through the chat template: the stream holds every turn, the engine's greedy
tokens equal stock transformers' on the same rendering, and generation stops at the turn's end."""

from __future__ import annotations

import pytest
import torch

from heedful.errors import HeedfulError
from heedful.selector.recorder import MemoryRecorder
from heedful.selector.session import Session, SessionConfig


def _session(lm, **cfg):
    return Session(lm.model, lm.tokenizer, config=SessionConfig(model="t", temperature=0, **cfg),
                   recorder=MemoryRecorder())


def _stock(lm, messages, n):
    tok = lm.tokenizer
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                  return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = lm.model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id)
    return ids[0].tolist(), out[0, ids.shape[1]:].tolist()


def test_a_user_turn_is_the_template_rendering_and_greedy_equals_stock(tiny_chat):
    s = _session(tiny_chat)
    s.say("Alice met Bob in Paris.", role="system")
    s.say("Where did they meet?")
    prompt, stock = _stock(tiny_chat, [{"role": "system", "content": "Alice met Bob in Paris."},
                                       {"role": "user", "content": "Where did they meet?"}], 12)
    assert s.token_ids == prompt
    ours = [t.id for t in s.generate(12)]
    assert ours == stock


def test_turns_carry_their_roles_and_markup_is_its_own_source(tiny_chat):
    s = _session(tiny_chat)
    s.say("Remember 4721.")
    list(s.generate(5))
    s.say("What was the number?")
    roles = [t.role for t in s.turns()]
    assert roles == ["user", "assistant", "user"]
    first = s.turns()[0]
    assert "4721" in s.text(first.start, first.end)
    assert "markup" in s.token_sources and "<|im_start|>" in "".join(
        t for t, src in zip(s.token_texts, s.token_sources) if src == "markup")
    assert [e["op"] for e in s.recorder.events if e["op"] == "say"] == ["say", "say"]


def test_generation_stops_at_the_end_of_turn(tiny_chat):
    s = _session(tiny_chat)
    end = tiny_chat.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end in s.config.stop_ids
    s.say("Hello there.")
    original = s._sampler
    calls = {"n": 0}

    def ends_third(logits, history):
        calls["n"] += 1
        return end if calls["n"] == 3 else original(logits, history)

    s._sampler = ends_third
    out = list(s.generate(20, stop_at_eos=True))
    assert len(out) == 3 and out[-1].id == end
    # the turn's end is the template's markup, not the assistant's content
    assert s.stream.sources[-3:] == ["generated", "generated", "markup"]
    assert s.turns()[-1].end == len(s) - 1
    s.say("And again?")  # the next turn follows the closed one
    assert [t.role for t in s.turns()] == ["user", "assistant", "user"]


def test_a_pin_in_turn_one_is_still_attended_many_turns_later(tiny_chat):
    s = _session(tiny_chat, window=24, budget=48)
    s.say("My locker code is 4721.", pin=["4721"])
    for i in range(12):
        list(s.generate(4))
        s.say(f"Chatter number {i}.")
    (a, b), = s.pins()
    assert "4721" in s.text(a, b)
    assert set(range(a, b)) <= set(s.retained())
    assert len(s.retained()) <= 48 and len(s) > 100


def test_say_on_a_model_without_a_template_is_one_line(tiny_qwen35):
    s = _session(tiny_qwen35)
    with pytest.raises(HeedfulError, match="no chat template"):
        s.say("hello")


def test_sampling_defaults_come_from_generation_config(tiny_chat):
    gc = tiny_chat.model.generation_config
    saved = {k: getattr(gc, k, None) for k in ("do_sample", "temperature", "top_k", "repetition_penalty")}
    try:
        gc.do_sample, gc.temperature, gc.top_k, gc.repetition_penalty = True, 0.7, 20, 1.1
        s = Session(tiny_chat.model, tiny_chat.tokenizer, config=SessionConfig(model="t"), recorder=MemoryRecorder())
        assert (s.config.temperature, s.config.top_k, s.config.repetition_penalty) == (0.7, 20, 1.1)
        s2 = Session(tiny_chat.model, tiny_chat.tokenizer, config=SessionConfig(model="t", top_k=5),
                     recorder=MemoryRecorder())
        assert s2.config.top_k == 5  # a flag wins over the card
    finally:
        for k, v in saved.items():
            setattr(gc, k, v)
