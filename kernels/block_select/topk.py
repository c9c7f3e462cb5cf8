"""Triton top-k blocks -> row indices, one program per (batch, KV head), one launch.

Replaces torch.topk + sort + expand (five or six small launches, each a few µs, which at
decode sizes cost more than the attention itself). Steps, all in registers:
1. each score becomes an order-preserving int64 key (float bits flipped, block number in
   the low 32 bits, so keys are distinct and ties go to the lower block);
2. one descending tl.sort; the topk-th key is the threshold; `key >= threshold` marks
   exactly min(topk, nb) blocks, already in ascending block order;
3. a cumulative sum gives each chosen block its slot; its rows start + blk*bs + r (r < bs,
   -1 past `end`) are stored at slot*bs + r, and the tail of the list is -1.
Reference: naive.blocks_to_rows after torch.topk (same output for distinct scores).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_BLOCKS = 4096  # one program sorts all of a head's scores; longer pools use torch.topk


@triton.jit
def _topk_rows_kernel(SCORES, OUT, nb, start, end, topk, out_len,
                      BS: tl.constexpr, BLOCK_NB: tl.constexpr, BLOCK_OUT: tl.constexpr):
    pid = tl.program_id(0)
    offs = tl.arange(0, BLOCK_NB)
    valid = offs < nb
    s = tl.load(SCORES + pid.to(tl.int64) * nb + offs, mask=valid, other=float("-inf"))
    bits = s.to(tl.int32, bitcast=True)
    # IEEE order -> int order: positives keep their bits (sign bit set), negatives are flipped
    u = tl.where(bits >= 0, bits.to(tl.int64) + 2147483648, (~bits).to(tl.int64))  # [0, 2^32)
    key = ((u - 2147483648) << 32) | (BLOCK_NB - 1 - offs).to(tl.int64)  # low bits: lower block wins ties
    key = tl.where(valid, key, -9223372036854775807)
    ordered = tl.sort(key, descending=True)
    kk = tl.minimum(topk, nb)
    thr = tl.max(tl.where(offs == kk - 1, ordered, -9223372036854775807), 0)
    chosen = valid & (key >= thr)
    slot = tl.cumsum(chosen.to(tl.int32), 0) - 1
    out_base = OUT + pid.to(tl.int64) * out_len
    for r in tl.static_range(BS):
        row = start + offs * BS + r
        tl.store(out_base + slot * BS + r, tl.where(row < end, row, -1), mask=chosen)
    o = tl.arange(0, BLOCK_OUT)
    for c0 in range(kk * BS, out_len, BLOCK_OUT):
        tl.store(out_base + c0 + o, tl.full([BLOCK_OUT], -1, tl.int32), mask=c0 + o < out_len)


def topk_rows_triton(scores, start: int, end: int, block_size: int, topk: int):
    """scores [B, Hkv, nb] fp32 -> rows [B, Hkv, topk * block_size] int32 (sorted, -1 padded)."""
    b, h, nb = scores.shape
    out = torch.empty(b, h, topk * block_size, dtype=torch.int32, device=scores.device)
    _topk_rows_kernel[(b * h,)](scores.contiguous(), out, nb, start, end, topk, topk * block_size,
                                BS=block_size, BLOCK_NB=max(16, triton.next_power_of_2(nb)), BLOCK_OUT=256)
    return out
