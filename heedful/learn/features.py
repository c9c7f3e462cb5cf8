"""The model's hidden states at chosen decoder layers, read through forward hooks.

The same hooks serve two readers: plain forwards of the stock model over token ids in
windows (training, scoring a prompt before it is processed, suggestions for a stored
session), and a session's own forwards while it generates (auto-pin reads the newest
token's state from the step that produced it, at no extra forward). A layer's feature is
its output hidden state; several layers are concatenated. Hooks record only forwards made
on the thread that installed them, so a UI thread's session and a scorer do not mix.
"""

from __future__ import annotations

import threading

import torch
from torch import nn


def decoder_layers(model) -> nn.ModuleList:
    """The model's list of decoder layers (also under a peft wrapper)."""
    cfg = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    n = cfg.num_hidden_layers
    found = [m for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n
             and name.endswith("layers")]
    if not found:
        raise RuntimeError("cannot find the model's decoder layers")
    return found[0]


def num_layers(model) -> int:
    return len(decoder_layers(model))


def default_layers(model) -> list[int]:
    """A third of the way, two thirds, and the last layer."""
    n = num_layers(model)
    return sorted({max(0, n // 3 - 1), max(0, 2 * n // 3 - 1), n - 1})


class Tap:
    """Forward hooks on `layers`; `last` holds each layer's output [L, d] of the latest
    forward on the owning thread, `calls` counts those forwards."""

    def __init__(self, model, layers: list[int]):
        self.layers = list(layers)
        self.owner = threading.get_ident()
        self.last: dict[int, torch.Tensor] = {}
        self.calls = 0
        mods = decoder_layers(model)
        self._handles = [mods[k].register_forward_hook(self._hook(k)) for k in self.layers]

    def _hook(self, k: int):
        final = k == self.layers[-1]

        def hook(module, args, output):
            if threading.get_ident() != self.owner:
                return
            h = output[0] if isinstance(output, tuple) else output
            self.last[k] = h[0].detach()
            if final:
                self.calls += 1

        return hook

    def features(self, rows: slice | int = slice(None)) -> torch.Tensor:
        """The concatenated states of the latest forward, rows selected, float32 on CPU."""
        parts = [self.last[k][rows] for k in self.layers]
        return torch.cat(parts, dim=-1).float().cpu()

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def window_starts(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first row this window provides): windows of `window` tokens every `stride`;
    each token takes its state from the window that gives it the most left context (at
    least window - stride tokens, except near the start)."""
    if n <= window:
        return [(0, n, 0)]
    out, s = [], 0
    while True:
        e = min(n, s + window)
        first = 0 if s == 0 else window - stride
        out.append((s, e, s + first))
        if e == n:
            break
        s += stride
    return out


@torch.inference_mode()
def hidden_states(model, ids: list[int], layers: list[int], window: int = 128, stride: int = 64,
                  tap: Tap | None = None) -> torch.Tensor:
    """[len(ids), d * len(layers)] hidden states from plain forwards of the model over
    windows of the ids (ordinary causal attention, no cache)."""
    n = len(ids)
    stride = max(1, min(stride, window))
    own = tap is None
    tap = tap or Tap(model, layers)
    device = next(model.parameters()).device
    try:
        out = []
        for s, e, first in window_starts(n, window, stride):
            model(input_ids=torch.tensor([ids[s:e]], device=device), use_cache=False, logits_to_keep=1)
            out.append(tap.features(slice(first - s, e - s)))
        return torch.cat(out) if out else torch.zeros(0)
    finally:
        if own:
            tap.close()
