"""Triton sparse decode: one query per head attends an index list of KV rows.

Design:
- one program per (batch, KV head, split): the G query heads of a GQA group are the rows of
  one tile, so each KV row is loaded once for the whole group;
- split-K: the index list is cut into `num_splits` slices processed in parallel, each
  producing an unnormalized partial output and its log-sum-exp; a second pass merges them
  (log-sum-exp weighting), so a single sequence still fills the GPU;
- online softmax in fp32; a split that reads no valid row writes lse = -inf and o = 0, and
  the merge maps an all -inf query to o = 0 (never NaN);
- row offsets are computed in int64 (caches past 2^31 elements).
Reference: naive.py (same semantics, documented there).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from heedful.kernels._triton import interpreting


@triton.jit
def _decode_split_kernel(
    Q, K, V, IDX, O_PART, LSE_PART,
    stride_qb, stride_qh, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ib, stride_ih, stride_ik,
    n_idx, split_len, scale,
    HKV: tl.constexpr, G: tl.constexpr, D: tl.constexpr, DV: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    NUM_SPLITS: tl.constexpr, PREC: tl.constexpr, F32: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    split = tl.program_id(1)
    b = pid_bh // HKV
    h = pid_bh % HKV
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    mask_g = offs_g < G
    q_ptrs = Q + b.to(tl.int64) * stride_qb + (h * G + offs_g[:, None]).to(tl.int64) * stride_qh \
        + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=mask_g[:, None] & (offs_d[None, :] < D), other=0.0)
    if F32:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_DV], dtype=tl.float32)
    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
    i_base = IDX + b.to(tl.int64) * stride_ib + h.to(tl.int64) * stride_ih
    start = split * split_len
    end = tl.minimum(start + split_len, n_idx)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        in_range = offs_n < end
        rows = tl.load(i_base + offs_n * stride_ik, mask=in_range, other=-1)
        valid = in_range & (rows >= 0)
        rows64 = tl.where(valid, rows, 0).to(tl.int64)
        k = tl.load(k_base + rows64[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                    mask=valid[:, None] & (offs_d[None, :] < D), other=0.0)
        if F32:
            k = k.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale  # [BLOCK_G, BLOCK_N], fp32
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(s - m_use[:, None])
        alpha = tl.exp(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + rows64[:, None] * stride_vn + offs_dv[None, :] * stride_vd,
                    mask=valid[:, None] & (offs_dv[None, :] < DV), other=0.0)
        if F32:
            v = v.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
        m_i = m_new
    empty = l_i == 0.0
    o = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("-inf"), m_i + tl.log(tl.where(empty, 1.0, l_i)))
    # partial buffers: [B, HKV, NUM_SPLITS, BLOCK_G, BLOCK_DV] and [B, HKV, NUM_SPLITS, BLOCK_G]
    part = (pid_bh.to(tl.int64) * NUM_SPLITS + split) * BLOCK_G
    tl.store(O_PART + (part + offs_g[:, None]) * BLOCK_DV + offs_dv[None, :], o)
    tl.store(LSE_PART + part + offs_g, lse)


def precision(dtype: torch.dtype) -> str:
    """fp32 inputs get exact fp32 products (no TF32), half inputs the tensor cores."""
    return "ieee" if dtype == torch.float32 else "tf32"


def upcast(dtype: torch.dtype) -> bool:
    """Compute in fp32 tiles: fp32 inputs, and bf16 under the CPU interpreter, whose bf16
    conversions are wrong (numpy has no bf16). On GPU, half inputs use the tensor cores."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and interpreting())


def _num_splits(n_idx: int, bh: int, device: torch.device) -> int:
    """Enough splits to give every SM a few programs, none shorter than 128 rows."""
    if n_idx <= 128:
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    want = max(1, (2 * sms) // max(bh, 1))
    return int(max(1, min(want, triton.cdiv(n_idx, 128), 64)))


def sparse_decode_triton(q, k, v, indices, scale: float, num_splits: int | None = None):
    """q [B, Hq, 1, D] -> (o [B, Hq, 1, Dv], lse [B, Hq, 1] fp32)."""
    b, hq, _, d = q.shape
    hkv, dv = k.shape[1], v.shape[-1]
    g = hq // hkv
    n_idx = indices.shape[-1]
    splits = num_splits or _num_splits(n_idx, b * hkv, q.device)
    split_len = triton.cdiv(max(n_idx, 1), splits)
    block_g = max(16, triton.next_power_of_2(g))
    block_d, block_dv = triton.next_power_of_2(d), triton.next_power_of_2(dv)
    o_part = torch.empty(b, hkv, splits, block_g, block_dv, device=q.device, dtype=torch.float32)
    lse_part = torch.empty(b, hkv, splits, block_g, device=q.device, dtype=torch.float32)
    q3 = q[:, :, 0]
    _decode_split_kernel[(b * hkv, splits)](
        q3, k, v, indices, o_part, lse_part,
        q3.stride(0), q3.stride(1), q3.stride(2),
        k.stride(0), k.stride(1), k.stride(2), k.stride(3),
        v.stride(0), v.stride(1), v.stride(2), v.stride(3),
        indices.stride(0), indices.stride(1), indices.stride(2),
        n_idx, split_len, scale,
        HKV=hkv, G=g, D=d, DV=dv, BLOCK_G=block_g, BLOCK_N=32 if block_d > 128 else 64,
        BLOCK_D=block_d, BLOCK_DV=block_dv, NUM_SPLITS=splits, PREC=precision(q.dtype), F32=upcast(q.dtype),
    )
    o_part, lse_part = o_part[:, :, :, :g, :dv], lse_part[:, :, :, :g]
    # merge the splits: weights exp(lse_s - lse); an all -inf query stays o = 0, lse = -inf
    lse = torch.logsumexp(lse_part, dim=2)  # [B, HKV, G]
    safe = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    w = torch.exp(lse_part - safe[:, :, None])  # exp(-inf) = 0 for empty splits
    o = (w[..., None] * o_part).sum(dim=2)
    return o.reshape(b, hq, 1, dv).to(q.dtype), lse.reshape(b, hq, 1)
