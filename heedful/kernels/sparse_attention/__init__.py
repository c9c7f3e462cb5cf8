"""Sparse attention over an index set of KV rows: decode, chunked prefill, and the
`sparse_attention` entry the engine calls. Semantics: naive.py."""

from __future__ import annotations

import torch

from heedful.kernels._triton import pick_backend
from heedful.kernels.sparse_attention.naive import sparse_attention_naive

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _validate(q, k, v, indices, n_causal: int, check_range: bool) -> None:
    """Shape, dtype and range errors are raised here, before any launch, in one line."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be 4-D [B, H, L|N, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    b, hq, length, d = q.shape
    if k.shape[0] != b or v.shape[:3] != k.shape[:3] or k.shape[-1] != d:
        raise ValueError(f"k {tuple(k.shape)} / v {tuple(v.shape)} do not match q {tuple(q.shape)}")
    hkv, n = k.shape[1], k.shape[2]
    if hkv == 0 or hq % hkv:
        raise ValueError(f"query heads {hq} are not a multiple of KV heads {hkv}")
    if q.dtype not in SUPPORTED_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"dtypes must match and be fp32/bf16/fp16; got {q.dtype}, {k.dtype}, {v.dtype}")
    if not isinstance(indices, torch.Tensor) or indices.dtype != torch.int32:
        got = indices.dtype if isinstance(indices, torch.Tensor) else type(indices).__name__
        raise ValueError(f"indices must be an int32 tensor; got {got}")
    if indices.dim() != 3 or indices.shape[:2] != (b, hkv):
        raise ValueError(f"indices must be [B, Hkv, K] = [{b}, {hkv}, K]; got {tuple(indices.shape)}")
    if indices.device != q.device or k.device != q.device or v.device != q.device:
        raise ValueError("q, k, v and indices must be on the same device")
    if n_causal > n:
        raise ValueError(f"chunk of {n_causal} rows but k has only {n}")
    if check_range and indices.numel():
        hi, lo = int(indices.max()), int(indices.min())
        limit = n - n_causal
        if hi >= limit or lo < -1:
            raise ValueError(f"indices out of range: must be -1 (padding) or in [0, {limit}); got min {lo}, max {hi}")


def sparse_decode(q, k, v, indices, scale: float, *, return_lse: bool = False, backend: str | None = None,
                  check_range: bool = True):
    """q [B, Hq, 1, D] attends exactly the indexed rows. Empty selection -> zeros, lse -inf."""
    if q.dim() == 4 and q.shape[2] != 1:
        raise ValueError(f"sparse_decode takes one query per head; got L = {q.shape[2]}")
    _validate(q, k, v, indices, 0, check_range)
    if pick_backend(q.device, backend) == "triton":
        from heedful.kernels.sparse_attention.decode import sparse_decode_triton

        o, lse = sparse_decode_triton(q, k, v, indices, scale)
    else:
        o, lse = sparse_attention_naive(q, k, v, indices, scale, 0)
    return (o, lse) if return_lse else o


def sparse_prefill(q, k, v, indices, scale: float, *, return_lse: bool = False, backend: str | None = None,
                   check_range: bool = True):
    """q [B, Hq, L, D]: the selected past rows plus the chunk (the last L rows) causally."""
    length = q.shape[2] if q.dim() == 4 else 0
    _validate(q, k, v, indices, length, check_range)
    if pick_backend(q.device, backend) == "triton":
        from heedful.kernels.sparse_attention.prefill import sparse_prefill_triton

        o, lse = sparse_prefill_triton(q, k, v, indices, scale)
    else:
        o, lse = sparse_attention_naive(q, k, v, indices, scale, length)
    return (o, lse) if return_lse else o


def sparse_attention(q, k, v, indices, scale: float, *, return_lse: bool = False, backend: str | None = None,
                     check_range: bool = True):
    """The engine's entry: indices select past rows [0, N - L); the chunk (last L rows) is
    always read causally. Decode (L = 1) goes to the split-K decode kernel with the token's
    own row N - 1 appended to every list (inside the kernel: no copy of the list).

    check_range=False skips the range check, which reads indices.max() back to the host (a
    device sync per call); out-of-range rows are then undefined behaviour on CUDA."""
    if q.dim() == 4 and q.shape[2] == 1:
        _validate(q, k, v, indices, 1, check_range)
        if pick_backend(q.device, backend) == "triton":
            from heedful.kernels.sparse_attention.decode import sparse_decode_triton

            o, lse = sparse_decode_triton(q, k, v, indices, scale, extra_row=k.shape[2] - 1)
        else:
            o, lse = sparse_attention_naive(q, k, v, indices, scale, 1)
        return (o, lse) if return_lse else o
    return sparse_prefill(q, k, v, indices, scale, return_lse=return_lse, backend=backend, check_range=check_range)
