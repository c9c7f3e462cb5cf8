"""Triton sparse decode: one query per head attends an index list of KV rows.

Design:
- one program per (batch, KV head, split): the G query heads of a GQA group are the rows of
  one tile, so each KV row is loaded once for the whole group;
- split-K: the index list is cut into `num_splits` slices processed in parallel, each
  producing a normalized partial output and its log-sum-exp; a second small kernel merges
  them (log-sum-exp weighting), so a single sequence still fills the GPU. With one split the
  first kernel writes the output directly (one launch);
- `extra_row` >= 0 appends one row to every list (the decoding token's own row), so the
  engine's entry needs no torch.cat of the index list per layer and step;
- online softmax in fp32; a split that reads no valid row writes lse = -inf and o = 0, and
  the merge maps an all -inf query to o = 0 (never NaN);
- row offsets are computed in int64 (caches past 2^31 elements).
Reference: naive.py (same semantics, documented there).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from heedful.kernels._triton import interpreting


@triton.jit
def _decode_split_kernel(
    Q, K, V, IDX, O_PART, LSE_PART, O, LSE,
    stride_qb, stride_qh, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ib, stride_ih, stride_ik,
    n_idx, n_total, extra_row, split_len, num_splits, scale,
    HKV: tl.constexpr, G: tl.constexpr, D: tl.constexpr, DV: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    DIRECT: tl.constexpr, PREC: tl.constexpr, F32: tl.constexpr,
):
    # num_splits and the list lengths are runtime values: a list that grows step by step
    # does not recompile the kernel
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
    qk_scale = scale * 1.4426950408889634  # scores in log2 units: exp2 in the loop

    m_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_DV], dtype=tl.float32)
    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
    i_base = IDX + b.to(tl.int64) * stride_ib + h.to(tl.int64) * stride_ih
    start = split * split_len
    end = tl.minimum(start + split_len, n_total)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        in_range = offs_n < end
        rows = tl.load(i_base + offs_n * stride_ik, mask=in_range & (offs_n < n_idx), other=-1)
        rows = tl.where(offs_n == n_idx, extra_row, rows)  # position n_idx: the appended row
        valid = in_range & (rows >= 0)
        rows64 = tl.where(valid, rows, 0).to(tl.int64)
        k = tl.load(k_base + rows64[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                    mask=valid[:, None] & (offs_d[None, :] < D), other=0.0)
        v = tl.load(v_base + rows64[:, None] * stride_vn + offs_dv[None, :] * stride_vd,
                    mask=valid[:, None] & (offs_dv[None, :] < DV), other=0.0)
        if F32:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale  # [BLOCK_G, BLOCK_N] fp32
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_use[:, None])
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
        m_i = m_new
    empty = l_i == 0.0
    o = acc / tl.where(empty, 1.0, l_i)[:, None]
    # back to natural-log units for the lse
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) * 0.6931471805599453)
    if DIRECT:  # one split: write the output itself, no merge
        # o [B, HKV*G, DV] contiguous in q's dtype, lse [B, HKV*G]
        out_row = (b * HKV + h).to(tl.int64) * G + offs_g
        tl.store(O + out_row[:, None] * DV + offs_dv[None, :], o.to(O.dtype.element_ty),
                 mask=mask_g[:, None] & (offs_dv[None, :] < DV))
        tl.store(LSE + out_row, lse, mask=mask_g)
    else:
        # partial buffers: [B, HKV, num_splits, BLOCK_G, BLOCK_DV] and [B, HKV, num_splits, BLOCK_G]
        part = (pid_bh.to(tl.int64) * num_splits + split) * BLOCK_G
        tl.store(O_PART + (part + offs_g[:, None]) * BLOCK_DV + offs_dv[None, :], o)
        tl.store(LSE_PART + part + offs_g, lse)


@triton.jit
def _merge_kernel(O_PART, LSE_PART, O, LSE, num_splits,
                  G: tl.constexpr, DV: tl.constexpr, BLOCK_G: tl.constexpr,
                  BLOCK_DV: tl.constexpr, BLOCK_S: tl.constexpr):
    """One program per query head: o = sum_s exp(lse_s - lse) o_s, lse = logsumexp_s lse_s."""
    pid = tl.program_id(0)  # b * HKV * G + h * G + g
    bh = pid // G
    g = pid % G
    offs_s = tl.arange(0, BLOCK_S)
    offs_dv = tl.arange(0, BLOCK_DV)
    mask_s = offs_s < num_splits
    part = (bh.to(tl.int64) * num_splits + offs_s) * BLOCK_G + g
    lse_s = tl.load(LSE_PART + part, mask=mask_s, other=float("-inf"))
    m = tl.max(lse_s, 0)
    m_use = tl.where(m == float("-inf"), 0.0, m)
    w = tl.exp(lse_s - m_use)  # empty splits: exp(-inf) = 0
    total = tl.sum(w, 0)
    o_s = tl.load(O_PART + part[:, None] * BLOCK_DV + offs_dv[None, :], mask=mask_s[:, None], other=0.0)
    o = tl.sum(w[:, None] * o_s, 0) / tl.where(total == 0.0, 1.0, total)
    lse = tl.where(total == 0.0, float("-inf"), m_use + tl.log(tl.where(total == 0.0, 1.0, total)))
    tl.store(O + pid.to(tl.int64) * DV + offs_dv, o.to(O.dtype.element_ty), mask=offs_dv < DV)
    tl.store(LSE + pid, lse)


def precision(dtype: torch.dtype) -> str:
    """fp32 inputs get exact fp32 products (no TF32), half inputs the tensor cores."""
    return "ieee" if dtype == torch.float32 else "tf32"


def upcast(dtype: torch.dtype) -> bool:
    """Compute in fp32 tiles: fp32 inputs, and bf16 under the CPU interpreter, whose bf16
    conversions are wrong (numpy has no bf16). On GPU, half inputs use the tensor cores."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and interpreting())


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


MIN_SPLIT = 64  # rows: a split shorter than this costs more in the merge than it saves


def _num_splits(n_idx: int, bh: int, device: torch.device) -> int:
    """About four programs per SM, none shorter than MIN_SPLIT rows, at most 64 splits."""
    if n_idx <= MIN_SPLIT:
        return 1
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device()) \
        if device.type == "cuda" else 4
    want = max(1, (4 * sms) // max(bh, 1))
    return int(max(1, min(want, triton.cdiv(n_idx, MIN_SPLIT), 64)))


def sparse_decode_triton(q, k, v, indices, scale: float, extra_row: int = -1, *, num_splits: int | None = None,
                         block_n: int | None = None, num_warps: int | None = None, num_stages: int | None = None):
    """q [B, Hq, 1, D] -> (o [B, Hq, 1, Dv], lse [B, Hq, 1] fp32). extra_row >= 0: every list
    also reads that row (after its own entries)."""
    b, hq, _, d = q.shape
    hkv, dv = k.shape[1], v.shape[-1]
    g = hq // hkv
    n_idx = indices.shape[-1]
    n_total = n_idx + (1 if extra_row >= 0 else 0)
    splits = num_splits or _num_splits(n_total, b * hkv, q.device)
    block_d, block_dv = triton.next_power_of_2(d), triton.next_power_of_2(dv)
    if block_n is None:
        block_n = 32 if block_d > 128 else 64
    split_len = triton.cdiv(max(n_total, 1), splits)
    split_len = triton.cdiv(split_len, block_n) * block_n  # whole tiles per split (aligned loads)
    splits = max(1, triton.cdiv(max(n_total, 1), split_len))
    block_g = max(16, triton.next_power_of_2(g))
    o = torch.empty(b, hq, 1, dv, device=q.device, dtype=q.dtype)
    lse = torch.empty(b, hq, 1, device=q.device, dtype=torch.float32)
    if splits > 1:
        o_part = torch.empty(b, hkv, splits, block_g, block_dv, device=q.device, dtype=torch.float32)
        lse_part = torch.empty(b, hkv, splits, block_g, device=q.device, dtype=torch.float32)
    else:
        o_part = lse_part = o  # unused
    q3 = q[:, :, 0]
    extra = {}
    if num_warps is not None:
        extra["num_warps"] = num_warps
    if num_stages is not None:
        extra["num_stages"] = num_stages
    _decode_split_kernel[(b * hkv, splits)](
        q3, k, v, indices, o_part, lse_part, o, lse,
        q3.stride(0), q3.stride(1), q3.stride(2),
        k.stride(0), k.stride(1), k.stride(2), k.stride(3),
        v.stride(0), v.stride(1), v.stride(2), v.stride(3),
        indices.stride(0), indices.stride(1), indices.stride(2),
        n_idx, n_total, extra_row, split_len, splits, scale,
        HKV=hkv, G=g, D=d, DV=dv, BLOCK_G=block_g, BLOCK_N=block_n,
        BLOCK_D=block_d, BLOCK_DV=block_dv, DIRECT=splits == 1, PREC=precision(q.dtype), F32=upcast(q.dtype),
        **extra,
    )
    if splits > 1:
        # BLOCK_S is the only split-dependent constexpr: 64 splits at most -> 6 variants
        _merge_kernel[(b * hq,)](o_part, lse_part, o, lse, splits, G=g, DV=dv, BLOCK_G=block_g,
                                 BLOCK_DV=block_dv, BLOCK_S=max(2, triton.next_power_of_2(splits)))
    return o, lse
