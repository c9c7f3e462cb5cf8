"""Block selection: Triton scoring against the reference, summaries, top-k rows."""

from __future__ import annotations

import os

import pytest
import torch

from heedful.kernels import BlockSummaries, block_summaries, score_blocks, select_topk_blocks
from heedful.kernels.block_select.naive import blocks_to_rows, score_blocks_naive

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

needs_triton = pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                                  reason="Triton on CPU needs TRITON_INTERPRET=1 (./test.sh sets it)")


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["minmax", "mean"])
@pytest.mark.parametrize("group,length", [(1, 1), (2, 1), (4, 1), (8, 3)])
@pytest.mark.parametrize("n,bs", [(64, 16), (70, 16), (5, 8)])
def test_triton_scores_match_reference(device, kind, group, length, n, bs):
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton on CPU needs TRITON_INTERPRET=1")
    gen = torch.Generator().manual_seed(n + group)
    q = torch.randn(2, 2 * group, length, 32, generator=gen).to(device)
    k = torch.randn(2, 2, n, 32, generator=gen).to(device)
    summ = block_summaries(k, bs, kind)
    torch.testing.assert_close(score_blocks(q, summ, kind, backend="triton"), score_blocks_naive(q, summ, kind),
                               atol=1e-4, rtol=1e-4)


def test_summaries_handle_a_short_last_block():
    k = torch.arange(10, dtype=torch.float32).reshape(1, 1, 10, 1)
    mean, same = block_summaries(k, 4, "mean")  # one representation: the mean as both halves
    assert mean.flatten().tolist() == [1.5, 5.5, 8.5] and same is mean
    lo, hi = block_summaries(k, 4, "minmax", start=2, end=9)
    assert lo.flatten().tolist() == [2, 6] and hi.flatten().tolist() == [5, 8]


def test_minmax_bound_is_an_upper_bound_of_every_key():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 1, 16, generator=gen)
    k = torch.randn(1, 1, 32, 16, generator=gen)
    bound = score_blocks(q, block_summaries(k, 8, "minmax"), "minmax")[0, 0]
    dots = (q[0, 0, 0] @ k[0, 0].T).reshape(4, 8).amax(-1)
    assert (bound >= dots - 1e-5).all()


def test_topk_picks_the_block_with_the_needle():
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(1, 2, 1, 16, generator=gen)
    k = 0.01 * torch.randn(1, 1, 100, 16, generator=gen)
    k[0, 0, 57] = 5 * q[0, 0, 0]  # one sharp key in block 5 of rows [7, 100) with bs 10: (57-7)//10
    rows = select_topk_blocks(q, k, 7, 100, 10, 2)
    assert rows.shape == (1, 1, 20) and rows.dtype == torch.int32
    assert 57 in rows.tolist()[0][0]
    got = [r for r in rows.tolist()[0][0] if r >= 0]
    assert got == sorted(got) and all(7 <= r < 100 for r in got)


def test_topk_larger_than_the_pool_pads_with_minus_one():
    k = torch.randn(1, 2, 30, 8)
    q = torch.randn(1, 4, 1, 8)
    rows = select_topk_blocks(q, k, 20, 30, 4, 5)
    assert rows.shape == (1, 2, 20)
    for head in rows[0].tolist():
        assert [r for r in head if r >= 0] == list(range(20, 30))
        assert head[10:] == [-1] * 10
    with pytest.raises(ValueError, match="outside"):
        select_topk_blocks(q, k, 20, 40, 4, 2)


@pytest.mark.parametrize("kind", ["minmax", "mean", "fla"])
def test_incremental_summaries_equal_a_rebuild(kind):
    gen = torch.Generator().manual_seed(7)
    k = torch.randn(1, 2, 120, 8, generator=gen)
    s = BlockSummaries(16, kind)

    def same(start, end):
        ref = block_summaries(k, 16, kind, start, end)
        got = s.summaries()
        for a, r in zip(got, ref):
            torch.testing.assert_close(a.float(), r)

    s.update(k, 4, 4)
    assert s.num_blocks == 0
    for end in (5, 20, 21, 36, 70, 100):  # appends, growing the buffers past their capacity
        s.update(k, 4, end)
        same(4, end)
    k[:, :, 40:90] = torch.randn(1, 2, 50, 8, generator=gen)  # compaction: rows from 40 on moved
    s.update(k, 4, 90, changed_from=40)
    same(4, 90)
    s.update(k, 10, 90)  # the pool start moved: re-anchored
    same(10, 90)
    with pytest.raises(ValueError, match="outside"):
        s.update(k, 10, 200)


def test_select_with_maintained_summaries_matches_from_scratch():
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, 4, 1, 16, generator=gen)
    k = torch.randn(1, 2, 200, 16, generator=gen)
    s = BlockSummaries(8).update(k, 30, 150)
    assert torch.equal(select_topk_blocks(q, k, 30, 150, 8, 4, summaries=s), select_topk_blocks(q, k, 30, 150, 8, 4))
    with pytest.raises(ValueError, match="summaries cover"):
        select_topk_blocks(q, k, 30, 160, 8, 4, summaries=s)
    with pytest.raises(ValueError, match="unknown summary"):
        select_topk_blocks(q, k, 30, 150, 8, 4, kind="max")


def test_blocks_to_rows_sorted_with_short_last_block_and_padding():
    blocks = torch.tensor([[[3, 0, 1]]])  # rows [10, 37) in blocks of 8: block 3 is rows 34..36
    rows = blocks_to_rows(blocks, 10, 37, 8, 4)[0, 0].tolist()
    assert rows[:19] == list(range(10, 26)) + [34, 35, 36]
    assert rows[19:] == [-1] * 13


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["minmax", "mean", "fla"])
@pytest.mark.parametrize("start,end,bs,topk", [(0, 64, 16, 2), (7, 100, 10, 3), (5, 40, 8, 9), (3, 4, 4, 1),
                                               (0, 130, 1, 17)])
def test_triton_selection_matches_reference(device, kind, start, end, bs, topk):
    """Scoring + the one-launch top-k/rows kernel against torch.topk + blocks_to_rows."""
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton on CPU needs TRITON_INTERPRET=1")
    gen = torch.Generator().manual_seed(end + topk)
    q = torch.randn(2, 8, 1, 16, generator=gen).to(device)
    k = torch.randn(2, 2, 140, 16, generator=gen).to(device)
    got = select_topk_blocks(q, k, start, end, bs, topk, kind, backend="triton")
    ref = select_topk_blocks(q, k, start, end, bs, topk, kind, backend="reference")
    assert got.dtype == torch.int32 and torch.equal(got, ref)


def _fla_reference(q, k, start, end, bs, topk, scale):
    """flash-linear-attention's naive_nsa_topk for one step, written out loop by loop: each
    query head's softmax over the blocks of scale * q . mean-pooled key, averaged over the
    GQA group (and here over the chunk's queries), the first block always in, then the best
    others; ties to the lower block. Returns the chosen blocks per (batch, KV head)."""
    b, hq, length, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    nb = -(-(end - start) // bs)
    out = []
    for bi in range(b):
        heads = []
        for h in range(hkv):
            means = [k[bi, h, start + i * bs: min(start + (i + 1) * bs, end)].double().mean(0) for i in range(nb)]
            score = [0.0] * nb
            for head in range(h * g, (h + 1) * g):
                for t in range(length):
                    logits = torch.stack([scale * (q[bi, head, t].double() @ m) for m in means])
                    for i, p in enumerate(logits.softmax(0).tolist()):
                        score[i] += p / (g * length)
            order = sorted(range(1, nb), key=lambda i: (-score[i], i))
            heads.append(sorted([0] + order[: max(min(topk, nb) - 1, 0)]))
        out.append(heads)
    return out


@pytest.mark.parametrize("group,length", [(1, 1), (4, 1), (2, 3)])
@pytest.mark.parametrize("start,end,bs,topk", [(0, 64, 16, 2), (7, 100, 10, 3), (3, 12, 4, 1), (5, 40, 8, 9)])
def test_fla_scoring_matches_a_naive_reference(group, length, start, end, bs, topk):
    """The "fla" kind against fla's rule written out loop by loop (float64)."""
    gen = torch.Generator().manual_seed(end + group)
    q = 3 * torch.randn(2, 2 * group, length, 16, generator=gen)
    k = torch.randn(2, 2, 110, 16, generator=gen)
    scale = 0.3
    scores = score_blocks(q, block_summaries(k, bs, "fla", start, end), "fla", scale=scale)
    nb = -(-(end - start) // bs)
    assert scores.shape == (2, 2, nb)
    torch.testing.assert_close(scores.sum(-1), torch.ones(2, 2))  # averaged probabilities
    rows = select_topk_blocks(q, k, start, end, bs, topk, "fla", scale=scale, backend="reference")
    want = _fla_reference(q, k, start, end, bs, topk, scale)
    for bi in range(2):
        for h in range(2):
            got = sorted({(r - start) // bs for r in rows[bi, h].tolist() if r >= 0})
            assert got == want[bi][h], (bi, h)


def test_fla_keeps_the_first_block_and_scales_like_attention():
    """The first block is in even when every query points elsewhere; the default scale is
    D ** -0.5 (a softmax, unlike a sum, depends on it)."""
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(1, 2, 1, 16, generator=gen)
    k = 0.01 * torch.randn(1, 1, 64, 16, generator=gen)
    k[0, 0, 40:48] = 4 * q[0, 0, 0]  # block 5 of 8
    rows = select_topk_blocks(q, k, 0, 64, 8, 2, "fla")[0, 0].tolist()
    assert rows == list(range(8)) + list(range(40, 48))
    summ = block_summaries(k, 8, "fla")
    torch.testing.assert_close(score_blocks(q, summ, "fla"), score_blocks(q, summ, "fla", scale=16 ** -0.5))
    assert not torch.allclose(score_blocks(q, summ, "fla"), score_blocks(q, summ, "fla", scale=1.0))


@pytest.mark.parametrize("kind", ["minmax", "mean", "fla"])
def test_ties_go_to_the_lowest_blocks_on_every_backend(kind):
    """A zero query ties every block: both backends take the lowest ones ("fla": the first
    block, then the lowest others), so the engine picks the same rows on CPU and GPU."""
    q = torch.zeros(1, 4, 1, 16)
    k = torch.randn(1, 2, 60, 16, generator=torch.Generator().manual_seed(0))
    want = [list(range(10, 22))] * 2
    backends = ["reference"] + (["triton"] if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"
                                else [])
    for backend in backends:
        rows = select_topk_blocks(q, k, 10, 60, 4, 3, kind, backend=backend)
        assert rows[0].tolist() == want, backend
