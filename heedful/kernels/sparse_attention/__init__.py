"""Sparse attention over an index set of KV rows: decode, chunked prefill, and
`sparse_attention`, which takes either. Semantics: naive.py. Each op has two twins of one
signature, the Triton kernel and the PyTorch reference (DECODE, PREFILL); the public
functions check their input and pick one by `backend` (heedful.kernels._triton.pick_backend),
heedful.kernels.Kernels picks once for a session."""

from __future__ import annotations

import torch

from heedful.kernels._triton import HAS_TRITON, pick_backend
from heedful.kernels.sparse_attention.naive import sparse_decode_naive, sparse_prefill_naive

if HAS_TRITON:
    from heedful.kernels.sparse_attention.decode import sparse_decode_triton
    from heedful.kernels.sparse_attention.prefill import sparse_prefill_triton

# backend -> (q, k, v, indices, scale[, extra_row]) -> (o, lse)
DECODE = {"reference": sparse_decode_naive, **({"triton": sparse_decode_triton} if HAS_TRITON else {})}
PREFILL = {"reference": sparse_prefill_naive, **({"triton": sparse_prefill_triton} if HAS_TRITON else {})}

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _validate(q, k, v, indices, n_causal: int, check_range: bool, extra_row: int = -1) -> None:
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
    if not -1 <= extra_row < n:
        raise ValueError(f"extra_row {extra_row}: must be -1 (none) or a row of k's {n}")
    if check_range and indices.numel():
        hi, lo = int(indices.max()), int(indices.min())
        limit = n - n_causal
        if hi >= limit or lo < -1:
            raise ValueError(f"indices out of range: must be -1 (padding) or in [0, {limit}); got min {lo}, max {hi}")


def sparse_decode(q, k, v, indices, scale: float, *, extra_row: int = -1, return_lse: bool = False,
                  backend: str | None = None, check_range: bool = True):
    """q [B, Hq, 1, D] attends exactly the indexed rows (and `extra_row`, when >= 0).
    Empty selection -> zeros, lse -inf."""
    if q.dim() == 4 and q.shape[2] != 1:
        raise ValueError(f"sparse_decode takes one query per head; got L = {q.shape[2]}")
    _validate(q, k, v, indices, 0, check_range, extra_row)
    o, lse = DECODE[pick_backend(q.device, backend)](q, k, v, indices, scale, extra_row)
    return (o, lse) if return_lse else o


def sparse_prefill(q, k, v, indices, scale: float, *, return_lse: bool = False, backend: str | None = None,
                   check_range: bool = True):
    """q [B, Hq, L, D]: the selected past rows plus the chunk (the last L rows) causally."""
    _validate(q, k, v, indices, q.shape[2] if q.dim() == 4 else 0, check_range)
    o, lse = PREFILL[pick_backend(q.device, backend)](q, k, v, indices, scale)
    return (o, lse) if return_lse else o


def sparse_attention(q, k, v, indices, scale: float, *, return_lse: bool = False, backend: str | None = None,
                     check_range: bool = True):
    """The engine's entry: indices select past rows [0, N - L); the chunk (last L rows) is
    always read causally. Decode (L = 1) is sparse_decode with the token's own row N - 1 as
    the extra row (inside the kernel: no copy of the list).

    check_range=False skips the range check, which reads indices.max() back to the host (a
    device sync per call); out-of-range rows are then undefined behaviour on CUDA."""
    if q.dim() == 4 and q.shape[2] == 1:
        _validate(q, k, v, indices, 1, check_range)
        return sparse_decode(q, k, v, indices, scale, extra_row=k.shape[2] - 1, return_lse=return_lse,
                             backend=backend, check_range=False)
    return sparse_prefill(q, k, v, indices, scale, return_lse=return_lse, backend=backend, check_range=check_range)
