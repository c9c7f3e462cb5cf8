"""Automatic fold: what leaves the window is pooled into block summaries kept in R rows."""

from __future__ import annotations

import pytest
import torch

from heedful.errors import BudgetError
from heedful.selector.session import Session
from tests.rows import summaries, summary_keys

TEXT = "The vault code is 4821. Remember it. Alice met Bob at the station at noon. " * 3


def _session(lm, **kw):
    return Session(lm.model, lm.tokenizer, gated=lm.gated, **kw)


def test_summaries_are_block_means_kept_in_their_rows(tiny_qwen35):
    F, W, R = 8, 16, 6
    s = _session(tiny_qwen35, window=W, budget=W + R, fold_budget=R, fold_block=F, prefill_chunk=1)
    full = _session(tiny_qwen35, window=400, budget=400, prefill_chunk=1)
    s.prompt(TEXT)
    full.prompt(TEXT)
    n = len(s)
    keys = summary_keys(s)
    assert 0 < len(keys) <= R and s.cache.resident() <= W + R
    assert keys == [(b + 1) * F - 0.5 for b in range(n // F) if (b + 1) * F <= n - W][-R:]
    assert s.retained() == list(range(n - W, n))  # only tokens of the window are tokens
    # the oldest summary still here is the mean of its block's rows, as a session that evicts
    # nothing computed them (block rows were computed before anything left)
    first = keys[0]
    b = int(first + 0.5) // F - 1
    row = s.residency.rows.keys.index(first)
    if (b + 1) * F <= W:  # computed with everything resident in both sessions
        for ls, lf in zip(s.cache.attention_layers, full.cache.attention_layers):
            mean_k = full.cache.keys_in_order(lf)[:, :, b * F:(b + 1) * F].float().mean(2)
            mean_v = full.cache.values_in_order(lf)[:, :, b * F:(b + 1) * F].float().mean(2)
            assert torch.allclose(s.cache.keys_in_order(ls)[:, :, row].float(), mean_k, atol=1e-5)
            assert torch.allclose(s.cache.values_in_order(ls)[:, :, row].float(), mean_v, atol=1e-5)


def test_the_first_block_summary_is_its_mean(tiny_qwen35):
    F, W, R = 8, 16, 4
    s = _session(tiny_qwen35, window=W, budget=W + R, fold_budget=R, fold_block=F, prefill_chunk=1)
    full = _session(tiny_qwen35, window=400, budget=400, prefill_chunk=1)
    ids = tiny_qwen35.tokenizer(TEXT)["input_ids"][: W + F]  # block 0 leaves, nothing more
    s.feed(ids, "prompt")
    full.feed(ids, "prompt")
    assert summary_keys(s) == [F - 0.5]
    row = s.residency.rows.keys.index(F - 0.5)
    assert row == 0  # where the block stood
    for ls, lf in zip(s.cache.attention_layers, full.cache.attention_layers):
        mean_k = full.cache.keys_in_order(lf)[:, :, :F].float().mean(2)
        mean_v = full.cache.values_in_order(lf)[:, :, :F].float().mean(2)
        assert torch.allclose(s.cache.keys_in_order(ls)[:, :, row].float(), mean_k, atol=1e-5)
        assert torch.allclose(s.cache.values_in_order(ls)[:, :, row].float(), mean_v, atol=1e-5)


def test_generation_stays_within_budget_and_rewinds(tiny_qwen35):
    s = _session(tiny_qwen35, window=12, budget=22, fold_budget=8, fold_block=4)
    s.prompt(TEXT)
    for _ in s.generate(60):
        assert s.cache.resident() <= 22
        assert summaries(s) <= 8
    s.pin((len(s) - 30, len(s) - 28))  # a pin of evicted text comes back in place, summaries stay
    assert s.cache.resident() <= 22 and summaries(s) > 0
    s.rewind(len(s) - 20)
    assert all(t < len(s) for t in s.residency.rows.keys)
    assert len(list(s.generate(5))) == 5


def test_fold_budget_needs_room(tiny_qwen35):
    with pytest.raises(BudgetError):
        _session(tiny_qwen35, window=16, budget=20, fold_budget=8)


def test_a_restored_session_rebuilds_its_summaries(tiny_qwen35):
    """Session.restore streams the tail again: the summaries stand where they stood, and the
    next token's logits are close to the original's (far closer than without summaries)."""
    F, W, R = 4, 12, 6
    settings = dict(window=W, budget=W + R + 3, fold_budget=R, fold_block=F, prefill_chunk=4)
    s = _session(tiny_qwen35, **settings)
    s.prompt(TEXT)
    s.pin((5, 8))
    list(s.generate(20))
    s.drop((len(s) - 40, len(s) - 37))

    def restored(**over):
        return Session.restore(tiny_qwen35.model, tiny_qwen35.tokenizer, config={**s.config.to_dict(), **over},
                               token_ids=s.token_ids, token_texts=s.token_texts, token_sources=s.token_sources,
                               pins=list(s._pins), dropped=list(s._dropped), gated=True)

    r = restored()
    assert r.residency.rows.keys == s.residency.rows.keys  # the same summaries (float keys), pins and window
    assert summaries(r) == R
    plain = restored(fold_budget=0, budget=W + 3)
    ours, theirs = r.next_logits, s.next_logits
    assert (ours - theirs).abs().max() < 0.6 * (plain.next_logits - theirs).abs().max()


def _summary_keys(s):
    return summary_keys(s)


def test_rewind_and_unpin_never_pool_a_block_twice(tiny_qwen35):
    """After a rewind, the blocks the re-read window reaches are pooled again once their
    tokens leave; a recalled token of a pooled block that is unpinned leaves without being
    pooled again. Summary keys stay distinct, each where its block ends."""
    F, W, R = 8, 16, 8
    s = _session(tiny_qwen35, window=W, budget=W + R + 4, fold_budget=R, fold_block=F)
    s.prompt(TEXT)
    list(s.generate(80))
    before = _summary_keys(s)
    at = len(s) - 10
    s.rewind(at)
    keys = _summary_keys(s)
    assert keys == [k for k in before if k < at - W] and keys  # only blocks wholly before the window stay
    list(s.generate(40))
    s.recall((10, 12))  # in place, pinned; then let go: it leaves with the window
    s.unpin((10, 12))
    list(s.generate(20))
    keys = _summary_keys(s)
    assert len(keys) == len(set(keys)) and 0 < len(keys) <= R
    assert all((k + 0.5) % F == 0 for k in keys)


@pytest.mark.parametrize("pool", ["credit", "fifo"])
def test_auto_selection_and_automatic_fold_share_the_budget(tiny_qwen35, pool):
    """Auto selection's pool fills what the window and the summaries leave: a summary arriving
    within a cut still fits (it overflowed the budget before)."""
    s = _session(tiny_qwen35, window=16, budget=48, fold_budget=8, fold_block=4, auto_topk=2, block_size=4,
                 auto_pool=pool)
    s.prompt(TEXT)
    for _ in s.generate(60):
        assert s.cache.resident() <= 48
    assert summaries(s) == 8
    assert len(s.residency.rows.keys) > 16 + 8  # the pool holds rows too
