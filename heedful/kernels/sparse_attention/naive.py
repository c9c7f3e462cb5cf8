"""PyTorch reference for sparse attention: gather the selected rows, softmax, exact.

Semantics shared with the Triton kernels (decode.py, prefill.py):
- indices [B, Hkv, K] int32 select KV rows per KV head; -1 is padding; a row listed twice
  counts twice (a plain gather: the engine passes unique rows);
- query head h reads KV head h // (Hq // Hkv) (GQA);
- `n_causal` > 0: the last n_causal rows of k/v are the chunk's own tokens; query i of the
  chunk also reads chunk rows 0..i (causal). Decode is n_causal = 0 with the token's own row
  in the index list;
- a query that reads nothing gets o = 0 and lse = -inf, never NaN.
Computation in fp32, output in q's dtype.
"""

from __future__ import annotations

import torch


def sparse_attention_naive(q, k, v, indices, scale: float, n_causal: int = 0):
    """q [B, Hq, L, D], k/v [B, Hkv, N, D(v)], indices [B, Hkv, K] -> (o [B, Hq, L, Dv], lse [B, Hq, L])."""
    b, hq, length, d = q.shape
    hkv, n = k.shape[1], k.shape[2]
    g = hq // hkv
    qf = q.float().reshape(b, hkv, g, length, d)
    idx = indices.long()
    valid = idx >= 0  # [B, Hkv, K]
    safe = idx.clamp(min=0)
    kg = torch.gather(k.float(), 2, safe[..., None].expand(-1, -1, -1, k.shape[-1]))  # [B, Hkv, K, D]
    vg = torch.gather(v.float(), 2, safe[..., None].expand(-1, -1, -1, v.shape[-1]))
    s = torch.einsum("bhgld,bhkd->bhglk", qf, kg) * scale
    s = s.masked_fill(~valid[:, :, None, None, :], float("-inf"))
    if n_causal:
        kc, vc = k[:, :, n - n_causal :].float(), v[:, :, n - n_causal :].float()
        sc = torch.einsum("bhgld,bhcd->bhglc", qf, kc) * scale
        causal = torch.ones(length, n_causal, dtype=torch.bool, device=q.device).tril(n_causal - length)
        sc = sc.masked_fill(~causal, float("-inf"))
        s = torch.cat([s, sc], dim=-1)
    lse = torch.logsumexp(s, dim=-1)  # [B, Hkv, G, L]
    p = torch.exp(s - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)[..., None])
    p = torch.nan_to_num(p, nan=0.0)
    o = torch.einsum("bhglk,bhkd->bhgld", p[..., : idx.shape[-1]], vg)
    if n_causal:
        o = o + torch.einsum("bhglc,bhcd->bhgld", p[..., idx.shape[-1] :], vc)
    o = o.reshape(b, hq, length, -1).to(q.dtype)
    return o, lse.reshape(b, hq, length)


def sparse_decode_naive(q, k, v, indices, scale: float, extra_row: int = -1):
    """The twin of decode.sparse_decode_triton: q [B, Hq, 1, D] reads the indexed rows, and
    row `extra_row` too when it is >= 0 (the token's own row)."""
    if extra_row >= 0:
        indices = torch.cat([indices, indices.new_full((*indices.shape[:2], 1), extra_row)], dim=-1)
    return sparse_attention_naive(q, k, v, indices, scale, 0)


def sparse_prefill_naive(q, k, v, indices, scale: float):
    """The twin of prefill.sparse_prefill_triton: the indexed past rows, then the chunk (the
    last L rows of k/v) causally."""
    return sparse_attention_naive(q, k, v, indices, scale, q.shape[2])
