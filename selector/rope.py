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
        # cos and signed sin of positions 0..P-1 ([P, rotary_dim] fp32), grown on demand: the
        # cache rotates every resident row of every layer at every step, by row index
        self._cos: torch.Tensor | None = None
        self._sin: torch.Tensor | None = None

    @classmethod
    def from_model(cls, model) -> "Rotary":
        base = getattr(model, "model", model)
        rotary = getattr(base, "rotary_emb", None)
        if rotary is None or not hasattr(rotary, "inv_freq"):
            raise ValueError("model has no rotary embedding with inv_freq: heedful needs RoPE")
        return cls(rotary.inv_freq)

    def _tables(self, end: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cos is None or self._cos.shape[0] < end or self._cos.device != device:
            size = max(end, 256, 2 * self._cos.shape[0] if self._cos is not None else 0)
            pos = torch.arange(size, device=device, dtype=torch.float32)
            freqs = pos[:, None] * self.inv_freq.to(device)[None, :]  # as rotate() computes them
            sin = freqs.sin()
            self._cos = torch.cat([freqs.cos(), freqs.cos()], dim=-1)
            # rotate_half(x) * [sin, sin] == roll(x, half) * [-sin, sin]: one roll, no negation
            self._sin = torch.cat([-sin, sin], dim=-1)
        return self._cos, self._sin

    def rotate_range(self, x: torch.Tensor, start: int, inverse: bool = False) -> torch.Tensor:
        """x: [B, H, N, D] rotated by positions start..start+N-1 (inverse: by their negatives,
        which un-rotates keys that sit there). What rotate() computes, in a few ops, from
        cached tables: the cache calls it for every layer at every step."""
        n, rd = x.shape[-2], self.rotary_dim
        cos, sin = self._tables(start + n, x.device)
        xr = x[..., :rd].float()
        out = torch.addcmul(xr * cos[start : start + n], torch.roll(xr, rd // 2, dims=-1), sin[start : start + n],
                            value=-1.0 if inverse else 1.0)
        if rd == x.shape[-1]:
            return out.to(x.dtype)
        return torch.cat([out.to(x.dtype), x[..., rd:]], dim=-1)

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
