"""Rotary position helpers for position compaction.

transformers caches keys after RoPE. heedful renumbers resident tokens whenever a row leaves,
so some cached keys must sit at new positions. Re-rotating a stored key by the difference on
every move would round (in bf16) once per move and drift; instead a key that has to move is
un-rotated once, into a position-free copy of its rotary dims (the cache's `masters`), and
every later rotation starts from that copy: one rounding, no accumulation. Which keys move,
and why most never do, is in slots.py.

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
        # cos and signed sin of positions 0..P-1 ([P, rotary_dim] fp32), grown on demand
        self._cos: torch.Tensor | None = None
        self._sin: torch.Tensor | None = None

    @classmethod
    def from_model(cls, model) -> "Rotary":
        base = getattr(model, "model", model)
        rotary = getattr(base, "rotary_emb", None)
        if rotary is None or not hasattr(rotary, "inv_freq"):
            raise ValueError("model has no rotary embedding with inv_freq: heedful needs RoPE")
        return cls(rotary.inv_freq)

    def tables(self, end: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin of positions 0..end-1 at least ([P, rotary_dim] fp32), cached."""
        if self._cos is None or self._cos.shape[0] < end or self._cos.device != device:
            size = max(end, 256, 2 * self._cos.shape[0] if self._cos is not None else 0)
            pos = torch.arange(size, device=device, dtype=torch.float32)
            freqs = pos[:, None] * self.inv_freq.to(device)[None, :]  # as rotate() computes them
            sin = freqs.sin()
            self._cos = torch.cat([freqs.cos(), freqs.cos()], dim=-1)
            # rotate_half(x) * [sin, sin] == roll(x, half) * [-sin, sin]: one roll, no negation
            self._sin = torch.cat([-sin, sin], dim=-1)
        return self._cos, self._sin

    def apply(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool = False,
              rolled: torch.Tensor | None = None) -> torch.Tensor:
        """x: [..., N, rotary_dim] (the rotary dims only) rotated by the positions whose rows of
        `tables` are given ([N, rotary_dim] each; inverse: by their negatives). Math in fp32,
        the result in x's dtype: the cache calls it for the rows it re-rotates, at every step
        for the fixed rows, passing `rolled` (x rolled by half, kept from step to step)."""
        xr = x if x.dtype == torch.float32 else x.float()
        if rolled is None:
            rolled = torch.roll(xr, self.rotary_dim // 2, dims=-1)
        elif rolled.dtype != torch.float32:
            rolled = rolled.float()
        out = torch.addcmul(xr * cos, rolled, sin, value=-1.0 if inverse else 1.0)
        return out if x.dtype == torch.float32 else out.to(x.dtype)

    def rotate_range(self, x: torch.Tensor, start: int, inverse: bool = False) -> torch.Tensor:
        """x: [B, H, N, D] rotated by positions start..start+N-1 (inverse: by their negatives,
        which un-rotates keys that sit there)."""
        n, rd = x.shape[-2], self.rotary_dim
        cos, sin = self.tables(start + n, x.device)
        out = self.apply(x[..., :rd], cos[start : start + n], sin[start : start + n], inverse)
        if rd == x.shape[-1]:
            return out
        return torch.cat([out, x[..., rd:]], dim=-1)

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
