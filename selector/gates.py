"""Reading a gated model's output gates while it runs (diagnostics, the UI's panel).

Qwen3.5's attention computes `q_proj(x)` as [query | gate] per head and multiplies the
attention output by sigmoid(gate) (the G1 elementwise, head-specific gate). A forward hook
on q_proj reads the gate half for the newest position and keeps its mean per layer.
"""

from __future__ import annotations

import torch

def gated_attention_modules(model) -> list:
    """(layer index, attention module) for every attention whose q_proj also emits a gate."""
    inner = getattr(model, "model", model)
    found = []
    for i, layer in enumerate(getattr(inner, "layers", [])):
        attn = getattr(layer, "self_attn", None)
        q = getattr(attn, "q_proj", None)
        cfg = getattr(attn, "config", None)
        if q is None or cfg is None:
            continue
        head_dim = getattr(attn, "head_dim", None) or getattr(cfg, "head_dim", None)
        if head_dim and q.out_features == 2 * cfg.num_attention_heads * head_dim:
            found.append((i, attn))
    return found


class GateMonitor:
    """Mean sigmoid gate of the newest position, per layer, updated on every forward."""

    def __init__(self, model):
        self.means: dict[int, float] = {}
        self._hooks = []
        for i, attn in gated_attention_modules(model):
            self._hooks.append(attn.q_proj.register_forward_hook(self._hook(i, attn.head_dim)))

    def _hook(self, i: int, head_dim: int):
        def hook(module, args, output):
            last = output[:, -1].detach()
            gate = last.view(*last.shape[:-1], -1, 2 * head_dim)[..., head_dim:]
            self.means[i] = float(torch.sigmoid(gate.float()).mean())

        return hook

    def mean(self) -> float | None:
        return sum(self.means.values()) / len(self.means) if self.means else None

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
