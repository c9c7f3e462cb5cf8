"""Auto (NSA-style) selection through the engine: the attention function merges the top-k
blocks of the pool with sinks + pins + window and reads them with heedful.kernels."""

from __future__ import annotations

import torch

from heedful.selector.attention import merge_indices
from heedful.selector.session import Session

PROMPT = "The vault code is 4821. Remember it. Alice met Bob at the station at noon. " * 3


def test_merge_indices_dedupes_sorts_and_pads():
    base = torch.tensor([0, 5, 9])
    picked = torch.tensor([[[9, 10, 11, -1], [1, 2, 3, 5]]], dtype=torch.int32)
    out = merge_indices(base, picked)
    assert out.tolist() == [[[0, 5, 9, 10, 11, -1, -1], [0, 1, 2, 3, 5, 9, -1]]]


def test_topk_covering_the_pool_equals_a_window_over_the_budget(tiny_qwen35):
    """With every pool block selected, the attended set is every resident row, which is
    what a session without auto selection and window B - L... attends: the last B rows."""
    lm = tiny_qwen35
    auto = Session(lm.model, lm.tokenizer, window=4, budget=24, auto_topk=64, block_size=4, prefill_chunk=4,
                   gated=True)
    plain = Session(lm.model, lm.tokenizer, window=24, budget=24, prefill_chunk=4, gated=True)
    for s in (auto, plain):
        s.prompt(PROMPT)
    assert torch.allclose(auto.next_logits, plain.next_logits, atol=1e-4)
    for a, p in zip(auto.generate(30), plain.generate(30)):
        assert a.id == p.id
        assert torch.allclose(auto.next_logits, plain.next_logits, atol=1e-4)
    assert auto.stats().peak_resident <= 24


def test_small_topk_attends_fewer_rows_than_resident(tiny_qwen35):
    lm = tiny_qwen35
    s = Session(lm.model, lm.tokenizer, window=4, budget=40, auto_topk=1, block_size=4, gated=True)
    s.prompt(PROMPT)
    s.pin("4821")
    from heedful.selector.attention import StepPlan

    seen = {}
    orig = s._plan

    def spy(first, n):
        plan = orig(first, n)
        plan.attended = seen
        return plan

    s._plan = spy
    list(s.generate(10))
    resident = len(s.retained())
    for layer, idx in seen.items():
        attended = (idx >= 0).sum(-1)  # per KV head, past rows
        assert int(attended.max()) < resident - 1
        pins = [s.retained().index(t) for a, b in s.pins() for t in range(a, b) if t in s.retained()]
        for row in pins:  # pins are read by every head
            assert bool((idx == row).any(-1).all())


def test_triton_kernels_give_the_reference_logits(tiny_qwen35, monkeypatch):
    """The attention function with the Triton kernels (interpreted on CPU) gives the same
    logits as with the PyTorch references."""
    import os

    import pytest

    if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        pytest.skip("Triton on CPU needs TRITON_INTERPRET=1 (./test.sh sets it)")
    lm = tiny_qwen35
    runs = {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("HEEDFUL_KERNELS", backend)
        s = Session(lm.model, lm.tokenizer, window=4, budget=40, auto_topk=2, block_size=4, prefill_chunk=4,
                    gated=True)
        s.prompt(PROMPT)
        s.pin("4821")
        logits = [s.next_logits]
        for _ in s.generate(8):
            logits.append(s.next_logits)
        runs[backend] = (s.token_ids, torch.stack(logits))
    assert runs["reference"][0] == runs["triton"][0]
    torch.testing.assert_close(runs["triton"][1], runs["reference"][1], atol=1e-4, rtol=1e-4)
