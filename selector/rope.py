"""Rotary position helpers for position compaction.

transformers caches keys after RoPE. heedful renumbers resident tokens 0..R-1 whenever a
row leaves, so a cached key must move to a new position. Re-rotating the stored key by the
difference on every move would round (in bf16) once per move and drift; instead the cache
un-rotates each key once, when it arrives, and stores it position-free. Reading the cache
rotates every resident row by its row index: one rounding, no accumulation, and row index
is exactly "rank among the retained", the compacted position.

Only rotate-half RoPE (Llama, Qwen, ...) is supported, including partial rotary dims
(Qwen3.5 rotates a quarter of each head). Scaled variants (YaRN) multiply cos/sin by a
constant: a pure rotation here leaves that factor in place, as the model intended.
"""

from __future__ import annotations

import torch


class Rotary:
    """Rotates [..., N, D] keys by integer positions with the model's own frequencies."""

    def __init__(self, inv_freq: torch.Tensor):
        self.inv_freq = inv_freq.detach().float()
        self.rotary_dim = 2 * self.inv_freq.numel()

    @classmethod
    def from_model(cls, model) -> "Rotary":
        base = getattr(model, "model", model)
        rotary = getattr(base, "rotary_emb", None)
        if rotary is None or not hasattr(rotary, "inv_freq"):
            raise ValueError("model has no rotary embedding with inv_freq: heedful needs RoPE")
        return cls(rotary.inv_freq)

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x: [B, H, N, D]; positions: [N] (any integers, negative too). Math in fp32."""
        rd = self.rotary_dim
        freqs = positions.to(device=x.device, dtype=torch.float32)[:, None] * self.inv_freq.to(x.device)[None, :]
        cos = torch.cat([freqs.cos(), freqs.cos()], dim=-1)  # [N, rd]
        sin = torch.cat([freqs.sin(), freqs.sin()], dim=-1)
        xr = x[..., :rd].float()
        half = rd // 2
        rotated_half = torch.cat([-xr[..., half:], xr[..., :half]], dim=-1)
        out = xr * cos + rotated_half * sin
        if rd == x.shape[-1]:
            return out.to(x.dtype)
        return torch.cat([out.to(x.dtype), x[..., rd:]], dim=-1)
