"""Operations beyond the invariants: rewind, recall, bad input, hybrid models."""

from __future__ import annotations

import re

import pytest
import torch

from heedful.errors import BudgetError, HeedfulError, TargetError
from heedful.selector.recorder import MemoryRecorder
from heedful.selector.naive import ReferenceEngine
from heedful.selector.session import Session

PROMPT = "The vault code is 4821. Remember it. Alice met Bob at the station at noon."


def _session(lm, **kw):
    kw.setdefault("window", 8)
    kw.setdefault("budget", 24)
    return Session(lm.model, lm.tokenizer, gated=lm.gated, **kw)


def test_rewind_regenerates_the_same_greedy_tokens(tiny_qwen35):
    s = _session(tiny_qwen35, window=128, budget=256)
    end = s.prompt(PROMPT).stop
    first = [t.id for t in s.generate(15)]
    s.rewind(end)
    assert len(s) == end
    again = [t.id for t in s.generate(15)]
    assert first == again


def test_rewind_to_the_end_keeps_the_logits(tiny_llama):
    s = _session(tiny_llama, sinks=2)
    s.prompt(PROMPT)
    list(s.generate(20))
    before = s.next_logits.clone()
    s.rewind(len(s))
    assert torch.allclose(s.next_logits, before, atol=1e-5)


def test_rewind_reencodes_freed_window_tokens(tiny_qwen35):
    s = _session(tiny_qwen35, window=8, budget=24, prefill_chunk=8)
    s.prompt(PROMPT)
    list(s.generate(40))
    ids = list(s.token_ids)
    s.rewind(30)
    assert s.retained() == list(range(22, 30))
    # every window token was freed: they are re-encoded as one chunk attending nothing
    # before them, which is what a fresh engine does with those ids as its first chunk
    ref = ReferenceEngine(tiny_qwen35.model, tiny_qwen35.tokenizer, window=8, sinks=0, chunk=8)
    ref._feed(ids[22:30])
    assert torch.allclose(s.next_logits, ref.logits, atol=1e-4)
    list(s.generate(5))
    assert len(s) == 35


def test_rewind_drops_pins_past_the_cut(tiny_qwen35):
    s = _session(tiny_qwen35, window=64, budget=96)
    s.prompt(PROMPT)
    s.pin((2, 4))
    s.pin((20, 22))
    s.rewind(10)
    assert s.pins() == [(2, 4)]
    assert set(range(2, 4)) <= set(s.retained())


def test_recall_brings_evicted_text_back_pinned_in_place(tiny_qwen35):
    rec = MemoryRecorder()
    s = _session(tiny_qwen35, window=8, budget=32, recorder=rec)
    s.prompt(PROMPT)
    list(s.generate(20))
    (code,) = s.resolve("4821")
    assert not set(range(*code)) & set(s.retained())
    n, ids = len(s), list(s.token_ids)
    s.recall("4821")
    assert len(s) == n and s.token_ids == ids  # one copy of the text: the stream is unchanged
    retained = s.retained()
    assert set(range(*code)) <= set(retained) and code in s.pins()
    assert retained == sorted(retained)  # at its own place in the resident order
    assert rec.events[-1] == {"op": "recall", "range": list(code)}
    assert len(rec.token_log) == n  # nothing appended
    list(s.generate(3))
    assert set(range(*code)) <= set(s.retained())


def test_recall_append_keeps_a_copy_at_the_end(tiny_qwen35):
    rec = MemoryRecorder()
    s = _session(tiny_qwen35, window=8, budget=32, recorder=rec)
    s.prompt(PROMPT)
    list(s.generate(20))
    (code,) = s.resolve("4821")
    n = len(s)
    s.recall("4821", append=True)
    new = range(n, n + code[1] - code[0])
    assert s.token_ids[n:] == s.token_ids[code[0]:code[1]]
    assert all(t in s.retained() for t in new)
    assert (new.start, new.stop) in s.pins()
    assert [r.source for r in rec.token_log[n:]] == ["recalled"] * len(new)
    assert rec.events[-1] == {"op": "recall", "range": list(code), "append": True}


def test_prompt_pins_are_set_before_prefill(tiny_qwen35):
    """Pins given with a prompt are never evicted, even when the prompt outruns the window."""
    rec = MemoryRecorder()
    s = _session(tiny_qwen35, window=8, budget=32, recorder=rec)
    r = s.prompt(PROMPT, pin=["4821", re.compile(r"Alice")])
    pins = s.pins()
    assert len(pins) == 2 and "4821" in s.text(*pins[0]) and "Alice" in s.text(*pins[1])
    assert all(r.start <= a < b <= r.stop for a, b in pins)
    retained = set(s.retained())
    assert all(t in retained for a, b in pins for t in range(a, b))
    assert rec.events[-1] == {"op": "prompt", "text": PROMPT, "pins": [list(p) for p in pins]}
    assert s.stats().evicted > 0  # the prompt did outrun the window
    # pinned the same way after the fact, the text would have needed re-encoding
    s2 = _session(tiny_qwen35, window=8, budget=32)
    s2.prompt(PROMPT)
    assert not all(t in set(s2.retained()) for a, b in pins for t in range(a, b))


def test_drop_forgets_now_even_inside_the_window(tiny_qwen35):
    rec = MemoryRecorder()
    s = _session(tiny_qwen35, window=64, budget=96, recorder=rec)
    s.prompt(PROMPT)
    (alice,) = s.drop("Alice")
    assert not set(range(*alice)) & set(s.retained())
    assert rec.evictions[-1] == (alice, "drop")


@pytest.mark.parametrize("op", ["pin", "unpin", "drop", "recall"])
@pytest.mark.parametrize("target", ["not in the text", (3, 3), (5, 2), (0, 10_000), (-1, 2)])
def test_bad_targets_are_refused_and_change_nothing(tiny_qwen35, op, target):
    rec = MemoryRecorder()
    s = _session(tiny_qwen35, window=16, budget=40, recorder=rec)
    s.prompt(PROMPT)
    s.pin("Alice")
    state = (s.pins(), s.retained(), len(s), len(rec.events), s.next_logits.clone())
    with pytest.raises(TargetError) as e:
        getattr(s, op)(target)
    assert "\n" not in str(e.value)
    assert (s.pins(), s.retained(), len(s), len(rec.events)) == state[:4]
    assert torch.equal(s.next_logits, state[4])


def test_pins_overflowing_the_budget_are_refused(tiny_qwen35):
    rec = MemoryRecorder()
    s = _session(tiny_qwen35, window=8, budget=12, recorder=rec)
    s.prompt(PROMPT)
    s.pin((10, 13))
    before = (s.pins(), s.retained(), len(rec.events))
    with pytest.raises(BudgetError, match="overflow the KV budget"):
        s.pin((0, 5))  # 3 + 5 pinned + window 8 > 12
    assert (s.pins(), s.retained(), len(rec.events)) == before


@pytest.mark.parametrize("window,budget,match", [(16, 8, "smaller than window"), (0, 8, "at least 1"),
                                                 (8, 10_000, "max_position_embeddings")])
def test_bad_window_and_budget(tiny_qwen35, window, budget, match):
    with pytest.raises(BudgetError, match=match):
        _session(tiny_qwen35, window=window, budget=budget)


def test_generate_needs_a_prompt_and_a_count(tiny_qwen35):
    s = _session(tiny_qwen35)
    with pytest.raises(HeedfulError, match="prompt first"):
        s.generate(3)
    s.prompt(PROMPT)
    with pytest.raises(TargetError):
        s.generate(-1)


def test_stopping_a_stream_early_is_logged(tiny_qwen35):
    rec = MemoryRecorder()
    s = _session(tiny_qwen35, recorder=rec)
    s.prompt(PROMPT)
    it = s.generate(10)
    next(it)
    next(it)
    at_pin = len(s)
    s.pin((0, 2))  # made between two tokens: carries the step it took effect at
    next(it)
    it.close()
    ops = [e for e in rec.events if e["op"] in ("generate", "pin", "stop")]
    assert ops == [{"op": "generate", "n": 10, "stop_at_eos": False}, {"op": "pin", "range": [0, 2], "at": at_pin},
                   {"op": "stop", "at": len(s)}]


def test_sampling_is_seeded(tiny_qwen35):
    runs = []
    for _ in range(2):
        s = _session(tiny_qwen35, temperature=1.0, top_p=0.9, seed=7)
        s.prompt(PROMPT)
        runs.append([t.id for t in s.generate(30)])
    assert runs[0] == runs[1]
    s = _session(tiny_qwen35, temperature=1.0, top_p=0.9, seed=8)
    s.prompt(PROMPT)
    assert [t.id for t in s.generate(30)] != runs[0]


def test_token_texts_concatenate_to_the_stream(tiny_qwen35):
    s = _session(tiny_qwen35, temperature=1.0)
    s.prompt(PROMPT + " été ☃ 数字")
    list(s.generate(40))
    full = tiny_qwen35.tokenizer.decode(s.token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    # a character still incomplete at the end of the stream is held back, nothing else
    assert full.startswith(s.text())
    assert set(full[len(s.text()):]) <= {"\ufffd"}
    assert s.text().startswith(PROMPT + " été ☃ 数字")


def test_hybrid_linear_attention_model_generates_and_refuses_rewind(tmp_path):
    from heedful.models.loading import load_model
    from tests.tiny_models import build_tiny_model

    d = build_tiny_model(tmp_path, "qwen3_5_hybrid")
    lm = load_model(str(d), dtype="float32", device="cpu")
    s = _session(lm, window=8, budget=16)
    s.prompt(PROMPT, pin=["4821"])  # pinned before prefill: nothing to re-encode
    assert len(list(s.generate(30))) == 30
    with pytest.raises(HeedfulError, match="full attention"):  # in place needs every layer full attention
        s.pin("Alice")
    s.recall("Alice", append=True)  # a copy at the end works on any model
    assert s.token_sources[-1] == "recalled"
    assert s.stats().peak_resident <= 16
    with pytest.raises(HeedfulError, match="full attention"):
        s.rewind(5)


def test_a_failed_forward_leaves_the_session_usable(tiny_qwen35):
    s = _session(tiny_qwen35, window=8, budget=24)
    s.prompt(PROMPT)
    list(s.generate(5))
    layer = tiny_qwen35.model.model.layers[1].self_attn
    state = (s.retained(), len(s))

    def boom(*a, **k):
        raise RuntimeError("simulated device failure")

    handle = layer.register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            list(s.generate(3))
    finally:
        handle.remove()
    assert len(s) == state[1] and s.cache.resident() == len(s.retained())
    assert len(list(s.generate(5))) == 5
    assert s.cache.resident() <= 24


def test_gate_monitor_reads_the_output_gate(tiny_qwen35, tiny_llama):
    s = _session(tiny_qwen35)
    s.watch_gates()
    s.prompt(PROMPT)
    g = s.gate_mean
    assert g is not None and 0.0 < g < 1.0
    from heedful.selector.gates import gated_attention_modules

    assert [i for i, _ in gated_attention_modules(tiny_qwen35.model)] == [0, 1]
    assert set(s._gates.means) == {0, 1}
    u = _session(tiny_llama)
    u.watch_gates()
    u.prompt(PROMPT)
    assert u.gate_mean is None
