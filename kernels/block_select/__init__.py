"""NSA / Quest-style block selection: summarize blocks of the candidate pool, score them
against the query, keep the top-k blocks per KV head. Summaries: naive.py explains the two
kinds and why "minmax" is the default."""

from __future__ import annotations

import torch

from heedful.kernels._triton import pick_backend
from heedful.kernels.block_select.naive import blocks_to_rows, block_summaries_naive, score_blocks_naive


def block_summaries(k, block_size: int, kind: str = "minmax", start: int = 0, end: int | None = None):
    """Summaries of rows [start, end) of k, in blocks of block_size (the last one may be
    short). The engine compacts its buffer when rows leave, so summaries are rebuilt over
    the pool range; this is a reduction over keys the cache has just rotated anyway."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1; got {block_size}")
    return block_summaries_naive(k, block_size, kind, start, end)


def score_blocks(q, summaries, kind: str = "minmax", *, backend: str | None = None):
    """[B, Hkv, nb] fp32 scores, summed over the query heads of each KV group."""
    if pick_backend(q.device, backend) == "triton":
        from heedful.kernels.block_select.score import score_blocks_triton

        return score_blocks_triton(q, summaries, kind)
    return score_blocks_naive(q, summaries, kind)


def select_topk_blocks(q, k, candidate_start: int, candidate_end: int, block_size: int, topk: int,
                       kind: str = "minmax", *, backend: str | None = None):
    """Row indices [B, Hkv, topk * block_size] int32 (sorted, -1 padded) of the top-k
    blocks of rows [candidate_start, candidate_end), per KV head."""
    if not 0 <= candidate_start <= candidate_end <= k.shape[2]:
        raise ValueError(f"candidate rows [{candidate_start}, {candidate_end}) outside k's {k.shape[2]} rows")
    b, hkv = k.shape[0], k.shape[1]
    if candidate_end == candidate_start or topk <= 0:
        return torch.full((b, hkv, max(topk, 0) * block_size), -1, dtype=torch.int32, device=k.device)
    summaries = block_summaries(k, block_size, kind, candidate_start, candidate_end)
    scores = score_blocks(q, summaries, kind, backend=backend)
    kk = min(topk, scores.shape[-1])
    blocks = scores.topk(kk, dim=-1).indices
    return blocks_to_rows(blocks, candidate_start, candidate_end, block_size, topk)
