"""Triton block scoring: query tile against block summaries, summed over the rows of a
KV group (query heads x chunk queries). One program per (batch, KV head, tile of blocks);
the group's query rows are loaded once per program. Reference: naive.score_blocks_naive."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from heedful.kernels.block_select.naive import score_blocks_naive


@triton.jit
def _score_kernel(Q, LO, HI, OUT, n_rows, nb,
                  stride_qb, stride_qh, stride_qr, stride_qd,
                  stride_sb, stride_sh, stride_sn, stride_sd,
                  HKV: tl.constexpr, D: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
                  MINMAX: tl.constexpr):
    pid_bh = tl.program_id(0)
    pid_n = tl.program_id(1)
    b = pid_bh // HKV
    h = pid_bh % HKV
    offs_n = pid_n * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_d = tl.arange(0, BLOCK_D)
    m = (offs_n[:, None] < nb) & (offs_d[None, :] < D)
    s_off = b.to(tl.int64) * stride_sb + h.to(tl.int64) * stride_sh + offs_n[:, None].to(tl.int64) * stride_sn \
        + offs_d[None, :] * stride_sd
    lo = tl.load(LO + s_off, mask=m, other=0.0).to(tl.float32)
    if MINMAX:
        hi = tl.load(HI + s_off, mask=m, other=0.0).to(tl.float32)
    acc = tl.zeros([BLOCK_B], dtype=tl.float32)
    q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    for r in range(0, n_rows):
        qv = tl.load(q_base + r * stride_qr + offs_d * stride_qd, mask=offs_d < D, other=0.0).to(tl.float32)
        if MINMAX:
            acc += tl.sum(tl.maximum(qv[None, :] * lo, qv[None, :] * hi), 1)
        else:
            acc += tl.sum(qv[None, :] * lo, 1)
    tl.store(OUT + pid_bh.to(tl.int64) * nb + offs_n, acc, mask=offs_n < nb)


def score_blocks_triton(q, summaries, kind: str = "minmax", scale: float | None = None):
    """The twin of naive.score_blocks_naive for "minmax" and "mean" ("fla"'s softmax spans
    every block: the reference computes it on every backend; `scale` is only fla's)."""
    if kind == "fla":
        return score_blocks_naive(q, summaries, kind, scale)
    b, hq, length, d = q.shape
    lo, hi = summaries
    hkv, nb = lo.shape[1], lo.shape[2]
    qg = q.reshape(b, hkv, (hq // hkv) * length, d)  # rows of a group are contiguous in [Hq, L]
    out = torch.empty(b, hkv, nb, device=q.device, dtype=torch.float32)
    block_b = 32
    _score_kernel[(b * hkv, triton.cdiv(nb, block_b))](
        qg, lo, hi, out, qg.shape[2], nb,
        qg.stride(0), qg.stride(1), qg.stride(2), qg.stride(3),
        lo.stride(0), lo.stride(1), lo.stride(2), lo.stride(3),
        HKV=hkv, D=d, BLOCK_B=block_b, BLOCK_D=triton.next_power_of_2(d), MINMAX=kind == "minmax",
    )
    return out
