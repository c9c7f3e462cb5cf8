"""NSA / Quest-style block selection: summarize blocks of the candidate pool, score them
against the query, keep the top-k blocks per KV head. Summaries and scores: naive.py explains
the three kinds ("minmax", "mean", "fla") and docs/kernels.md which is the engine's default.
Every kind's summaries are one pair (lo, hi) of [B, Hkv, nb, D] tensors: min and max, or the
mean twice. Each op has two twins of one signature (SCORE, TOPK_ROWS: the Triton kernel and
the PyTorch reference).

Two ways to get summaries:
- `block_summaries(k, bs, kind, start, end)`: from scratch over a row range (what
  `select_topk_blocks` does when given none). It reads every key of the pool, so at long
  pools it costs more than the sparse decode it serves;
- `BlockSummaries`: kept up to date as rows arrive (append: only the last block is redone)
  and leave (compaction: the blocks from the first moved row on are redone). Pass it as
  `select_topk_blocks(..., summaries=s)`: a step then reads only nb summary vectors.
"""

from __future__ import annotations

import torch

from heedful.kernels._triton import HAS_TRITON, pick_backend
from heedful.kernels.block_select.naive import (block_summaries_naive, force_first_block, score_blocks_naive,
                                                topk_rows_naive)

if HAS_TRITON:
    from heedful.kernels.block_select.score import score_blocks_triton
    from heedful.kernels.block_select.topk import topk_rows_triton

KINDS = ("minmax", "mean", "fla")  # "fla": mean summaries, group-averaged softmax scores, first block kept

# backend -> twin
SCORE = {"reference": score_blocks_naive, **({"triton": score_blocks_triton} if HAS_TRITON else {})}
TOPK_ROWS = {"reference": topk_rows_naive, **({"triton": topk_rows_triton} if HAS_TRITON else {})}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown summary {kind!r} (expected 'minmax', 'mean' or 'fla')")


def block_summaries(k, block_size: int, kind: str = "minmax", start: int = 0, end: int | None = None):
    """Summaries (lo, hi) of rows [start, end) of k, in blocks of block_size (the last one may
    be short), each [B, Hkv, nb, D] fp32."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1; got {block_size}")
    _check_kind(kind)
    return block_summaries_naive(k, block_size, kind, start, end)


class BlockSummaries:
    """Block summaries of rows [start, end) of a key buffer, updated incrementally.

    Blocks are anchored at `start`: block i covers rows [start + i*bs, start + (i+1)*bs).
    `update(k, start, end, changed_from)` makes them cover [start, end) of k, redoing only
    the blocks that hold a row >= changed_from (default: the previous end, i.e. rows were
    only appended). A moved `start` or a changed block size re-anchors: full rebuild.
    Min/max are kept in k's dtype (exact: a min of bf16 values is a bf16 value), means in
    fp32 (one buffer, given as both halves of the pair).
    """

    def __init__(self, block_size: int, kind: str = "minmax"):
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1; got {block_size}")
        _check_kind(kind)
        self.block_size, self.kind = block_size, kind
        self.start = self.end = 0
        self.rows_read = 0  # keys summarized so far, all updates together (what maintenance saves)
        self._bufs: list[torch.Tensor] = []  # capacity-sized [B, Hkv, cap, D]: lo and hi, or the mean

    @property
    def num_blocks(self) -> int:
        return -(-(self.end - self.start) // self.block_size)

    def summaries(self):
        """The current summaries (lo, hi), views: no copy."""
        nb = self.num_blocks
        return self._bufs[0][:, :, :nb], self._bufs[-1][:, :, :nb]

    def update(self, k, start: int, end: int, changed_from: int | None = None):
        if not 0 <= start <= end <= k.shape[2]:
            raise ValueError(f"rows [{start}, {end}) outside k's {k.shape[2]} rows")
        bs = self.block_size
        shape_ok = bool(self._bufs) and self._bufs[0].shape[:2] == k.shape[:2] \
            and self._bufs[0].shape[-1] == k.shape[-1] and self._bufs[0].device == k.device
        if changed_from is None:
            changed_from = min(self.end, end)
        first = 0 if (start != self.start or not shape_ok) else max(0, min(changed_from, end) - start) // bs
        nb = -(-(end - start) // bs)
        cap = self._bufs[0].shape[2] if shape_ok else 0
        minmax = self.kind == "minmax"
        if nb > cap:  # grow by doubling so appends stay amortized O(1)
            new_cap = max(nb, 2 * cap, 16)
            dt = k.dtype if minmax else torch.float32
            new = [torch.empty(k.shape[0], k.shape[1], new_cap, k.shape[-1], dtype=dt, device=k.device)
                   for _ in range(2 if minmax else 1)]
            if shape_ok and first:
                for nbuf, obuf in zip(new, self._bufs):
                    nbuf[:, :, :first] = obuf[:, :, :first]
            self._bufs = new
        if first < nb:
            part = block_summaries_naive(k, bs, self.kind, start + first * bs, end)
            self.rows_read += end - (start + first * bs)
            for buf, p in zip(self._bufs, part):
                buf[:, :, first:nb] = p
        self.start, self.end = start, end
        return self


def score_blocks(q, summaries, kind: str = "minmax", *, backend: str | None = None, scale: float | None = None):
    """[B, Hkv, nb] fp32 scores, summed over the query heads of each KV group (and the
    queries of a chunk). minmax: Quest's upper bound sum_d max(q_d lo_d, q_d hi_d);
    mean: q . mean; fla: softmax over the blocks of scale * q . mean, per query head, averaged
    over the group (a few PyTorch ops on every backend: the softmax spans all blocks)."""
    _check_kind(kind)
    if isinstance(summaries, BlockSummaries):
        summaries = summaries.summaries()
    return SCORE[pick_backend(q.device, backend)](q, summaries, kind, scale)


def select_topk_blocks(q, k, candidate_start: int, candidate_end: int, block_size: int, topk: int,
                       kind: str = "minmax", *, backend: str | None = None, summaries=None,
                       scale: float | None = None):
    """Row indices [B, Hkv, topk * block_size] int32 (sorted, -1 padded) of the top-k
    blocks of rows [candidate_start, candidate_end), per KV head. "fla" always takes the
    first block (one of the k), and scales its softmax by `scale` (default D ** -0.5).

    summaries: a BlockSummaries covering exactly that range with that block size and kind
    (or block_summaries' output for it); None computes them from k (reads the whole pool)."""
    return select_rows(pick_backend(q.device, backend), q, k, candidate_start, candidate_end, block_size, topk,
                       kind, summaries, scale)


def select_rows(backend: str, q, k, candidate_start: int, candidate_end: int, block_size: int, topk: int,
                kind: str, summaries, scale: float | None):
    """select_topk_blocks on a backend already picked (heedful.kernels.Kernels)."""
    if not 0 <= candidate_start <= candidate_end <= k.shape[2]:
        raise ValueError(f"candidate rows [{candidate_start}, {candidate_end}) outside k's {k.shape[2]} rows")
    _check_kind(kind)
    b, hkv = k.shape[0], k.shape[1]
    if candidate_end == candidate_start or topk <= 0:
        return torch.full((b, hkv, max(topk, 0) * block_size), -1, dtype=torch.int32, device=k.device)
    if isinstance(summaries, BlockSummaries):
        if (summaries.start, summaries.end, summaries.block_size, summaries.kind) != \
                (candidate_start, candidate_end, block_size, kind):
            raise ValueError(f"summaries cover rows [{summaries.start}, {summaries.end}) in blocks of "
                             f"{summaries.block_size} ({summaries.kind}), not [{candidate_start}, {candidate_end}) "
                             f"in blocks of {block_size} ({kind})")
        summaries = summaries.summaries()
    elif summaries is None:
        summaries = block_summaries(k, block_size, kind, candidate_start, candidate_end)
    scores = SCORE[backend](q, summaries, kind, scale)
    if kind == "fla":
        scores = force_first_block(scores)
    return TOPK_ROWS[backend](scores, candidate_start, candidate_end, block_size, topk)
