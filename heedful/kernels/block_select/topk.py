"""Triton top-k blocks -> row indices, one program per (batch, KV head), one launch.

Replaces torch.topk + sort + expand (five or six small launches, each a few µs, which at
decode sizes cost more than the attention itself). Steps, all in registers:
1. one descending tl.sort of the scores; the topk-th is the threshold;
2. blocks above it are chosen, and of those equal to it the lowest ones, so exactly
   min(topk, nb) blocks are marked, already in ascending block order;
3. a cumulative sum gives each chosen block its slot; its rows start + blk*bs + r (r < bs,
   -1 past `end`) are stored at slot*bs + r, and the tail of the list is -1.
Reference: naive.blocks_to_rows after torch.topk (the same rows for distinct scores).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from heedful.kernels.block_select.naive import MAX_BLOCKS, topk_rows_naive


@triton.jit
def _topk_rows_kernel(SCORES, OUT, nb, start, end, topk, out_len,
                      BS: tl.constexpr, BLOCK_NB: tl.constexpr, BLOCK_OUT: tl.constexpr):
    pid = tl.program_id(0)
    offs = tl.arange(0, BLOCK_NB)
    valid = offs < nb
    s = tl.load(SCORES + pid.to(tl.int64) * nb + offs, mask=valid, other=float("-inf"))
    kk = tl.minimum(topk, nb)
    # the kk-th largest score is the threshold (a 32-bit sort: half the work of sorting
    # (score, block) pairs); blocks above it are in, ties at it go to the lowest blocks
    ordered = tl.sort(s, descending=True)
    thr = tl.max(tl.where(offs == kk - 1, ordered, float("-inf")), 0)
    above = valid & (s > thr)
    tie = valid & (s == thr)
    room = kk - tl.sum(above.to(tl.int32), 0)
    chosen = above | (tie & (tl.cumsum(tie.to(tl.int32), 0) <= room))
    slot = tl.cumsum(chosen.to(tl.int32), 0) - 1  # chosen blocks keep ascending order
    out_base = OUT + pid.to(tl.int64) * out_len
    for r in tl.static_range(BS):
        row = start + offs * BS + r
        tl.store(out_base + slot * BS + r, tl.where(row < end, row, -1), mask=chosen)
    o = tl.arange(0, BLOCK_OUT)
    for c0 in range(kk * BS, out_len, BLOCK_OUT):
        tl.store(out_base + c0 + o, tl.full([BLOCK_OUT], -1, tl.int32), mask=c0 + o < out_len)


def topk_rows_triton(scores, start: int, end: int, block_size: int, topk: int, num_warps: int | None = None):
    """scores [B, Hkv, nb] fp32 -> rows [B, Hkv, topk * block_size] int32 (sorted, -1 padded).
    Past MAX_BLOCKS blocks or 256-row blocks (one program holds a head's scores and a block's
    rows in registers) the reference does it."""
    b, h, nb = scores.shape
    if nb > MAX_BLOCKS or block_size > 256:
        return topk_rows_naive(scores, start, end, block_size, topk)
    out = torch.empty(b, h, topk * block_size, dtype=torch.int32, device=scores.device)
    block_nb = max(16, triton.next_power_of_2(nb))
    _topk_rows_kernel[(b * h,)](scores.contiguous(), out, nb, start, end, topk, topk * block_size,
                                BS=block_size, BLOCK_NB=block_nb, BLOCK_OUT=256,
                                num_warps=num_warps or (16 if block_nb >= 2048 else 8 if block_nb >= 1024 else 4))
    return out
