"""Auto (NSA-style) selection through the engine: the attention function merges the top-k
blocks of the pool with sinks + pins + window and reads them with heedful.kernels."""

from __future__ import annotations

import pytest
import torch

from heedful.selector.attention import merge_indices
from heedful.selector.policy import CreditPolicy, RetentionPolicy
from heedful.selector.session import Session

PROMPT = "The vault code is 4821. Remember it. Alice met Bob at the station at noon. " * 3


def test_merge_indices_dedupes_sorts_and_pads():
    base = torch.tensor([0, 5, 9])
    picked = torch.tensor([[[9, 10, 11, -1], [1, 2, 3, 5]]], dtype=torch.int32)
    out = merge_indices(base, picked)
    assert out.tolist() == [[[0, 5, 9, 10, 11, -1, -1], [0, 1, 2, 3, 5, 9, -1]]]


def test_topk_covering_the_pool_equals_a_window_over_the_budget(tiny_qwen35):
    """With every pool block selected, the attended set is every resident row, which with
    the fifo pool is what a session without auto selection and window B - L... attends: the
    last B rows. (The credit pool keeps other rows: every row picked, the oldest credited.)"""
    lm = tiny_qwen35
    auto = Session(lm.model, lm.tokenizer, window=4, budget=24, auto_topk=64, block_size=4, prefill_chunk=4,
                   gated=True, auto_pool="fifo")
    plain = Session(lm.model, lm.tokenizer, window=24, budget=24, prefill_chunk=4, gated=True)
    for s in (auto, plain):
        s.prompt(PROMPT)
    assert torch.allclose(auto.next_logits, plain.next_logits, atol=1e-4)
    for a, p in zip(auto.generate(30), plain.generate(30)):
        assert a.id == p.id
        assert torch.allclose(auto.next_logits, plain.next_logits, atol=1e-4)
    assert auto.stats().peak_resident <= 24


def _ops(s):
    """Prompt, generate, pin, drop, recall, rewind, set: every way rows arrive and move."""
    logits = []
    s.prompt(PROMPT)
    logits.append(s.next_logits)
    for _ in s.generate(12):
        logits.append(s.next_logits)
    s.pin("4821")  # evicted by now: a recall
    s.drop("Alice")
    n = len(s.token_ids)
    s.pin((n - 8, n - 6))  # resident, in the pool
    for _ in s.generate(40):
        logits.append(s.next_logits)
    # the new window [n - 10, n - 6) was freed except the pin: re-encoded, the pin's rows move
    s.rewind(n - 6)
    logits.append(s.next_logits)
    s.recall("station")
    s.set(window=6)
    for _ in s.generate(15):
        logits.append(s.next_logits)
    return torch.stack(logits)


@pytest.mark.parametrize("pool,score", [("fifo", "minmax"), ("credit", "minmax"), ("credit", "fla"),
                                        ("fifo", "mean")])
def test_maintained_summaries_select_what_recomputed_ones_do(tiny_qwen35, pool, score, monkeypatch):
    """The summaries kept from step to step (updated for arrivals, evictions, rewinds and
    re-encoding) give the logits that summaries recomputed from the pool at each step give.
    The credit pool evicts from the middle of the pool (checked: it differs from the fifo
    pool), which marks the summaries stale from there."""
    lm = tiny_qwen35
    kw = dict(window=4, budget=40, auto_topk=2, block_size=4, prefill_chunk=4, gated=True, auto_pool=pool,
              auto_score=score)
    kept = Session(lm.model, lm.tokenizer, **kw)
    fresh = Session(lm.model, lm.tokenizer, **kw)
    differs = []
    credit_rows = CreditPolicy.keep_rows

    def keep_rows(self, *args, **kwargs):
        rows = credit_rows(self, *args, **kwargs)
        differs.append(list(rows) != list(RetentionPolicy.keep_rows(self, *args, **kwargs)))
        return rows

    monkeypatch.setattr(CreditPolicy, "keep_rows", keep_rows)
    orig = fresh.residency._plan

    def recompute(first, n, kept):
        p, positions = orig(first, n, kept)
        if p.auto is not None:
            p.auto.summaries = None
        return p, positions

    fresh.residency._plan = recompute
    a, b = _ops(kept), _ops(fresh)
    assert kept.token_ids == fresh.token_ids
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert kept.cache.summaries  # they were used
    assert kept.stats().peak_resident <= 40
    if pool == "credit":
        assert any(differs) and kept.policy._c.any()


def test_below_the_budget_a_step_summarizes_only_the_last_block(tiny_qwen35):
    """While nothing is evicted no row moves: a step redoes the last block only. (At the
    budget each eviction moves the rows after it, and the blocks from there are redone.)"""
    lm = tiny_qwen35
    s = Session(lm.model, lm.tokenizer, window=8, budget=400, auto_topk=2, block_size=8, gated=True)
    s.prompt(PROMPT)
    before = {i: k.rows_read for i, k in s.cache.summaries.items()}
    pool_before = {i: k.end - k.start for i, k in s.cache.summaries.items()}
    steps = 40
    list(s.generate(steps))
    assert s.stats().evicted == 0
    for i, k in s.cache.summaries.items():
        per_step = (k.rows_read - before[i]) / steps
        assert per_step <= 8, (i, per_step)  # recomputing would read the whole pool
        assert k.end - k.start >= pool_before[i] + steps


def test_small_topk_attends_fewer_rows_than_resident(tiny_qwen35):
    lm = tiny_qwen35
    s = Session(lm.model, lm.tokenizer, window=4, budget=40, auto_topk=1, block_size=4, gated=True)
    s.prompt(PROMPT)
    s.pin("4821")
    from heedful.selector.attention import StepPlan

    seen = {}
    orig = s.residency._plan

    def spy(first, n, kept):
        plan, positions = orig(first, n, kept)
        plan.attended = seen
        return plan, positions

    s.residency._plan = spy
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


def test_cache_reports_the_first_row_that_moved(tiny_qwen35):
    """The cache's stale_from is what keeps the summaries right: the first rank whose key
    changed since the last refresh, however many evictions came in between. Rows never move
    in the buffers: an eviction only frees slots."""
    lm = tiny_qwen35
    s = Session(lm.model, lm.tokenizer, window=64, budget=64, gated=True)
    s.prompt(PROMPT[:60])
    cache = s.cache
    n = cache.resident()
    cache.summaries_refreshed()
    layer = cache.attention_layers[0]
    buffer = layer.keys.clone()
    free = cache.keys_in_order(layer)
    cache.keep([(0, n)])  # nothing leaves
    assert cache.stale_from is None
    cache.keep([(0, 3), (4, 7)])  # row 3 and rows from 7 leave: ranks 3.. change
    assert cache.stale_from == 3 and cache.resident() == 6
    assert torch.equal(layer.keys, buffer)  # nothing was copied
    torch.testing.assert_close(cache.keys_in_order(layer), free[:, :, [0, 1, 2, 4, 5, 6]])
    cache.keep([(0, 5)])  # a truncation only: the earlier change still counts
    assert cache.stale_from == 3
    cache.summaries_refreshed()
    cache.keep([(1, 2), (3, 5)])  # row 0 goes: every rank changes
    assert cache.stale_from == 0 and cache.resident() == 3
    torch.testing.assert_close(cache.keys_in_order(layer), free[:, :, [1, 4, 5]])
    cache.summaries_refreshed()
    cache.truncate(2)
    assert cache.stale_from == 2 and cache.resident() == 2
    cache.summaries_refreshed()
    cache.reset()
    assert cache.stale_from == 0


def test_pick_counts_are_what_the_heads_attended(tiny_qwen35):
    """The counts the credit pool learns from (AutoSelect.hits, one index_add per layer) are,
    for every pool row that is not a pin, the number of (layer, KV head) pairs whose attended
    rows include it; rows outside the pool get none."""
    lm = tiny_qwen35
    s = Session(lm.model, lm.tokenizer, window=4, budget=40, auto_topk=2, block_size=4, prefill_chunk=4, gated=True)
    s.prompt(PROMPT)
    s.pin("4821")
    plans, checked = [], []
    orig_plan, orig_observe = s.residency._plan, s.policy.observe_selection

    def spy(first, n, kept):
        plan, positions = orig_plan(first, n, kept)
        plan.attended = {}
        plans.append(plan)
        return plan, positions

    def observe(resident, n, pool, rows, counts):
        a = plans[-1].auto
        if a is not None:
            base = set(a.base_rows.tolist())
            hits = a.hits.tolist()
            for r in range(len(hits) - 1):
                seen = sum(int((idx == r).any(-1).sum()) for idx in plans[-1].attended.values())
                if r in base:
                    continue
                assert hits[r + 1] == (seen if a.pool_start <= r < a.pool_end else 0), r
            assert a.selections == sum(idx.shape[0] * idx.shape[1] for idx in plans[-1].attended.values())
            assert dict(zip(rows, counts)) == {r - a.pool_start: h / a.selections for r, h in enumerate(hits[1:]) if h}
            checked.append(len(rows))
        orig_observe(resident, n, pool, rows, counts)

    s.residency._plan = spy
    s.policy.observe_selection = observe
    list(s.generate(12))
    assert len(checked) == 12 and all(checked)


def test_credit_pool_keeps_pins_window_and_budget_over_a_long_stream(tiny_qwen35):
    lm = tiny_qwen35
    s = Session(lm.model, lm.tokenizer, window=6, budget=32, auto_topk=1, block_size=4, gated=True)
    s.prompt(PROMPT)
    s.pin("4821")
    pinned = [t for a, b in s.pins() for t in range(a, b)]
    list(s.generate(60))
    retained = s.retained()
    assert s.stats().peak_resident <= 32 and len(retained) == 32  # eviction is lazy: the budget full
    assert set(pinned) <= set(retained)
    assert retained[-6:] == list(range(len(s) - 6, len(s)))  # the window
    pool = [t for t in retained if t not in pinned][:-6]
    assert pool != list(range(pool[-1] - len(pool) + 1, pool[-1] + 1))  # not just the most recent


def test_bad_pool_or_scoring_is_refused(tiny_qwen35):
    from heedful.errors import HeedfulError

    with pytest.raises(HeedfulError, match="--auto-score"):
        Session(tiny_qwen35.model, tiny_qwen35.tokenizer, auto_topk=2, auto_score="quest", gated=True)
