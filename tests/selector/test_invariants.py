"""docs/DESIGN.md invariants 1-3 and 5 on tiny real-config models (gated Qwen3.5 with every layer
full attention, ungated Llama), loaded through heedful's loader."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heedful.errors import HeedfulError
from heedful.models.loading import load_model
from heedful.selector.recorder import MemoryRecorder
from heedful.selector.naive import ReferenceEngine
from heedful.selector.session import Session

TEXTS = ["The vault code is 4821. Remember it.", " Alice met Bob at the station at noon.",
         " A filler sentence follows another filler sentence.", " What is the vault code?", " 0 1 2 3"]


def _close(a, b):
    return torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max().item()


ops = st.lists(
    st.one_of(
        st.tuples(st.just("prompt"), st.sampled_from(TEXTS)),
        st.tuples(st.just("generate"), st.integers(1, 6)),
        st.tuples(st.sampled_from(["pin", "unpin", "drop", "recall", "recall_append"]), st.floats(0, 1),
                  st.floats(0, 1)),
        st.tuples(st.just("budget"), st.integers(0, 24)),  # set(budget=window + sinks + x)
    ),
    min_size=1, max_size=12,
)


def _run_against_reference(lm, operations, window, budget, sinks, chunk):
    s = Session(lm.model, lm.tokenizer, window=window, budget=budget, sinks=sinks, prefill_chunk=chunk,
                gated=lm.gated)
    ref = ReferenceEngine(lm.model, lm.tokenizer, window=window, sinks=sinks, chunk=min(chunk, window))
    s.prompt(TEXTS[0])
    ref.prompt(TEXTS[0])
    for op in operations:
        if op[0] == "prompt":
            s.prompt(op[1])
            ref.prompt(op[1])
        elif op[0] == "budget":  # reallocates the KV buffers; what is attended does not change
            before = (s.pins(), s.retained(), len(s), s.cache.capacity)
            try:
                s.set(budget=window + sinks + op[1])
            except HeedfulError:
                assert (s.pins(), s.retained(), len(s), s.cache.capacity) == before, "a refused set changed it"
                continue
            budget = window + sinks + op[1]
            assert s.cache.capacity == budget
        elif op[0] == "generate":
            for tok in s.generate(op[1]):
                ref.step(tok.id)
                ok, err = _close(s.next_logits, ref.logits)
                assert ok, f"generate step {tok.index}: max |diff| {err}"
        else:
            n = len(s)
            a = min(int(op[1] * n), n - 1)
            b = a + 1 + int(op[2] * min(6, n - a - 1))
            before = (s.pins(), s.retained(), len(s))
            try:
                if op[0] == "recall_append":
                    s.recall((a, b), append=True)
                else:
                    getattr(s, op[0])((a, b))
            except HeedfulError:
                assert (s.pins(), s.retained(), len(s)) == before, "a refused op changed the session"
                continue
            if op[0] == "recall_append":
                ref.pin(a, b, append=True)
            else:
                getattr(ref, op[0])(a, b)
        ok, err = _close(s.next_logits, ref.logits)
        assert ok, f"after {op}: max |diff| {err}"
        assert s.cache.resident() <= budget


@pytest.mark.parametrize("which", ["tiny_qwen35", "tiny_llama"])
def test_invariant1_fixed_sequence(which, request):
    """A hand-written sequence that evicts, pins past the window, recalls, unpins and drops."""
    lm = request.getfixturevalue(which)
    sequence = [("generate", 20), ("pin", 0.1, 0.5), ("prompt", TEXTS[1]), ("generate", 30),
                ("pin", 0.05, 1.0), ("budget", 3), ("unpin", 0.1, 0.5), ("drop", 0.9, 0.3), ("budget", 40),
                ("prompt", TEXTS[2]), ("generate", 25), ("recall", 0.3, 0.6), ("generate", 5),
                ("drop", 0.5, 0.2), ("recall", 0.5, 0.2), ("recall_append", 0.2, 0.3), ("generate", 5)]
    _run_against_reference(lm, sequence, window=8, budget=40, sinks=0 if lm.gated else 2, chunk=5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=ops, window=st.integers(2, 12), chunk=st.integers(1, 16), sinks=st.integers(0, 2))
def test_invariant1_property(tiny_qwen35, operations, window, chunk, sinks):
    """Eviction is invisible: any sequence of prompt/generate/pin/unpin/drop/set(budget)
    gives the logits of the reference engine that frees nothing."""
    _run_against_reference(tiny_qwen35, operations, window=window, budget=window + sinks + 12, sinks=sinks,
                           chunk=chunk)


@pytest.mark.parametrize("which", ["tiny_qwen35", "tiny_llama"])
def test_invariant2_matches_stock_sdpa(which, request):
    """With nothing evicted, heedful's attention gives the stock model's logits."""
    lm = request.getfixturevalue(which)
    d = request.getfixturevalue(which + "_dir")
    stock = load_model(str(d), dtype="float32", device="cpu", attn_implementation="sdpa").model
    s = Session(lm.model, lm.tokenizer, window=256, budget=256, sinks=0, prefill_chunk=7, gated=lm.gated)
    s.prompt(TEXTS[0] + TEXTS[1])
    steps = list(s.generate(12))
    assert not s.stats().evicted
    with torch.inference_mode():
        full = stock(input_ids=torch.tensor([s.token_ids])).logits[0].float()
    ok, err = _close(s.next_logits, full[-1])
    assert ok, f"max |diff| {err}"
    # every greedy step agreed with the stock model's argmax at that position
    for tok in steps:
        assert tok.id == int(full[tok.index - 1].argmax())


def test_invariant3_unbounded_continuation(tiny_qwen35_short_dir):
    """max_position_embeddings=128, window 32, budget 64: 2,000+ tokens, resident <= 64,
    no position id reaches 128."""
    lm = load_model(str(tiny_qwen35_short_dir), dtype="float32", device="cpu")
    seen = []
    hook = lm.model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(int(kwargs["position_ids"].max())), with_kwargs=True)
    try:
        s = Session(lm.model, lm.tokenizer, window=32, budget=64, temperature=1.0, seed=1, gated=True)
        s.prompt(TEXTS[0] * 6)  # longer than the window: prefill evicts too
        s.pin("4821")
        peak = 0
        for _ in s.generate(2100):
            peak = max(peak, s.cache.resident())
    finally:
        hook.remove()
    st_ = s.stats()
    assert st_.generated == 2100 and len(s) > 2100
    assert peak <= 64 and st_.peak_resident <= 64
    assert max(seen) < 128
    assert st_.evicted >= len(s) - 64


def test_pins_survive_and_unpinned_go(tiny_qwen35):
    s = Session(tiny_qwen35.model, tiny_qwen35.tokenizer, window=16, budget=48, gated=True)
    s.collect_attention = True
    s.prompt("The vault code is 4821. Remember it.")
    (pin,) = s.pin("4821")
    (other,) = s.resolve("Remember")
    for _ in s.generate(1000):
        pass
    retained = s.retained()
    assert all(t in retained for t in range(*pin))
    assert not any(t in retained for t in range(*other))
    # the pinned rows are still attended by the newest token, in every layer
    rows = [retained.index(t) for t in range(*pin)]
    for probs in s.last_attention.values():
        assert probs.shape[0] == len(retained)
        assert float(probs[rows].sum()) > 0


def test_invariant5_targets_logged_as_ranges(tiny_qwen35):
    rec = MemoryRecorder()
    s = Session(tiny_qwen35.model, tiny_qwen35.tokenizer, window=64, budget=128, recorder=rec, gated=True)
    s.prompt("The vault code is 4821. The vault is closed.")
    import re

    s.pin("vault", occurrence="all")
    s.unpin(re.compile(r"clo\w+"))
    kinds = [e for e in rec.events if e["op"] in ("pin", "unpin")]
    assert len(kinds) == 3
    for e in kinds:
        assert set(e) == {"op", "range"}
        a, b = e["range"]
        assert 0 <= a < b <= len(s)
    assert "vault" in s.text(*kinds[0]["range"]) and "vault" in s.text(*kinds[1]["range"])
