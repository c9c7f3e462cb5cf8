"""Triton sparse chunked prefill: the L new tokens of a chunk attend the selected past rows
plus the chunk itself, causally.

One program per (batch, KV head, tile of BLOCK_M (query, group head) rows): the rows of a
tile share the KV head, so each selected KV row is loaded once for every query head of the
group and every query of the tile. Pass 1 streams the index list (the same for every row),
pass 2 the chunk's own rows with the causal mask. Online softmax in fp32, int64 offsets.
Reference: naive.py.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from heedful.kernels.sparse_attention.decode import precision, upcast


@triton.jit
def _online(s, m_i, l_i, acc, v, PREC: tl.constexpr):
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp(s - m_use[:, None])
    alpha = tl.exp(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
    return m_new, l_i, acc


@triton.jit
def _prefill_kernel(
    Q, K, V, IDX, O, LSE,
    stride_qb, stride_qh, stride_ql, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ib, stride_ih, stride_ik,
    stride_ob, stride_oh, stride_ol, stride_od,
    n_idx, n_rows, length, chunk_start, scale,
    HKV: tl.constexpr, G: tl.constexpr, D: tl.constexpr, DV: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PREC: tl.constexpr, F32: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    pid_m = tl.program_id(1)
    b = pid_bh // HKV
    h = pid_bh % HKV
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # flattened (query i, group head g)
    mask_m = offs_m < length * G
    qi = offs_m // G
    qh = h * G + offs_m % G
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q = tl.load(Q + b.to(tl.int64) * stride_qb + qh[:, None].to(tl.int64) * stride_qh
                + qi[:, None].to(tl.int64) * stride_ql + offs_d[None, :] * stride_qd,
                mask=mask_m[:, None] & (offs_d[None, :] < D), other=0.0)
    if F32:
        q = q.to(tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
    i_base = IDX + b.to(tl.int64) * stride_ib + h.to(tl.int64) * stride_ih
    # pass 1: the selected past rows, the same list for every query of the chunk
    for n0 in range(0, n_idx, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        rows = tl.load(i_base + offs_n * stride_ik, mask=offs_n < n_idx, other=-1)
        valid = (offs_n < n_idx) & (rows >= 0)
        rows64 = tl.where(valid, rows, 0).to(tl.int64)
        k = tl.load(k_base + rows64[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                    mask=valid[:, None] & (offs_d[None, :] < D), other=0.0)
        if F32:
            k = k.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale
        s = tl.where(valid[None, :], s, float("-inf"))
        v = tl.load(v_base + rows64[:, None] * stride_vn + offs_dv[None, :] * stride_vd,
                    mask=valid[:, None] & (offs_dv[None, :] < DV), other=0.0)
        if F32:
            v = v.to(tl.float32)
        m_i, l_i, acc = _online(s, m_i, l_i, acc, v, PREC)
    # pass 2: the chunk's own rows, causal (query i reads chunk rows 0..i)
    last_q = tl.minimum((pid_m * BLOCK_M + BLOCK_M - 1) // G, length - 1)
    for c0 in range(0, last_q + 1, BLOCK_N):
        offs_c = c0 + tl.arange(0, BLOCK_N)
        valid_c = offs_c < length
        rows64 = (chunk_start + offs_c).to(tl.int64)
        k = tl.load(k_base + rows64[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                    mask=valid_c[:, None] & (offs_d[None, :] < D), other=0.0)
        if F32:
            k = k.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale
        s = tl.where(valid_c[None, :] & (offs_c[None, :] <= qi[:, None]), s, float("-inf"))
        v = tl.load(v_base + rows64[:, None] * stride_vn + offs_dv[None, :] * stride_vd,
                    mask=valid_c[:, None] & (offs_dv[None, :] < DV), other=0.0)
        if F32:
            v = v.to(tl.float32)
        m_i, l_i, acc = _online(s, m_i, l_i, acc, v, PREC)
    empty = l_i == 0.0
    o = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("-inf"), m_i + tl.log(tl.where(empty, 1.0, l_i)))
    o_ptrs = O + b.to(tl.int64) * stride_ob + qh[:, None].to(tl.int64) * stride_oh \
        + qi[:, None].to(tl.int64) * stride_ol + offs_dv[None, :] * stride_od
    tl.store(o_ptrs, o.to(O.dtype.element_ty), mask=mask_m[:, None] & (offs_dv[None, :] < DV))
    tl.store(LSE + (b * HKV * G + qh).to(tl.int64) * length + qi, lse, mask=mask_m)


def sparse_prefill_triton(q, k, v, indices, scale: float):
    """q [B, Hq, L, D]; the last L rows of k/v are the chunk -> (o [B, Hq, L, Dv], lse [B, Hq, L])."""
    b, hq, length, d = q.shape
    hkv, n, dv = k.shape[1], k.shape[2], v.shape[-1]
    g = hq // hkv
    o = torch.empty(b, hq, length, dv, device=q.device, dtype=q.dtype)
    lse = torch.empty(b, hq, length, device=q.device, dtype=torch.float32)
    block_d, block_dv = triton.next_power_of_2(d), triton.next_power_of_2(dv)
    block_m = 64 if length * g >= 64 else max(16, triton.next_power_of_2(length * g))
    grid = (b * hkv, triton.cdiv(length * g, block_m))
    _prefill_kernel[grid](
        q, k, v, indices, o, lse,
        q.stride(0), q.stride(1), q.stride(2), q.stride(3),
        k.stride(0), k.stride(1), k.stride(2), k.stride(3),
        v.stride(0), v.stride(1), v.stride(2), v.stride(3),
        indices.stride(0), indices.stride(1), indices.stride(2),
        o.stride(0), o.stride(1), o.stride(2), o.stride(3),
        indices.shape[-1], n, length, n - length, scale,
        HKV=hkv, G=g, D=d, DV=dv, BLOCK_M=block_m, BLOCK_N=32 if block_d > 128 else 64,
        BLOCK_D=block_d, BLOCK_DV=block_dv, PREC=precision(q.dtype), F32=upcast(q.dtype),
    )
    return o, lse
