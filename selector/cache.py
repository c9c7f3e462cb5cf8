"""The KV cache: a fixed-capacity row buffer per attention layer that frees rows and
compacts positions.

Row j of every attention layer holds the j-th resident token (resident tokens in stream
order), so a token's attention position is its row index: its rank among the retained
(docs/DESIGN.md, "position compaction"). Keys are stored position-free (see rope.py) and
rotated by row index when a layer reads them. Freeing rows moves the kept rows after the
first freed one down the buffer; nothing else is recomputed.

Capacity is the KV budget, allocated once (and again only when `set(budget=)` changes it):
resident memory is constant however long the session runs. Linear-attention layers of hybrid models (Qwen3.5, Qwen3-Next) keep their
recurrent state in transformers' own layer class; eviction does not apply to them.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, LinearAttentionLayer

from heedful.selector.rope import Rotary

ATTENTION_LAYER_TYPES = {"full_attention", "sliding_attention", "chunked_attention"}


class CompactingLayer(CacheLayerMixin):
    """One attention layer's resident rows: keys (position-free) and values."""

    def __init__(self, rotary: Rotary, capacity: int):
        super().__init__()
        self.rotary = rotary
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        dv = value_states.shape[-1]
        self.keys = key_states.new_zeros(b, h, self.capacity, d)
        self.values = value_states.new_zeros(b, h, self.capacity, dv)
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        """Appends the chunk's rows (keys arrive rotated to positions R..R+L-1) and returns
        all resident keys rotated to their row positions, and the values."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        r, n_new = self.length, key_states.shape[-2]
        if r + n_new > self.capacity:
            raise RuntimeError(f"KV budget exceeded: {r} resident + {n_new} new rows > capacity {self.capacity}")
        self.keys[:, :, r : r + n_new] = self.rotary.rotate_range(key_states, r, inverse=True)
        self.values[:, :, r : r + n_new] = value_states
        self.length = r + n_new
        if r:
            keys = torch.cat([self.rotary.rotate_range(self.keys[:, :, :r], 0), key_states], dim=-2)
        else:
            keys = key_states
        return keys, self.values[:, :, : self.length]

    # buffers are inference tensors (made under inference_mode): edit them under it too
    @torch.inference_mode()
    def keep_runs(self, first: int, runs: list[tuple[int, int]], total: int) -> None:
        """Rows [0, first) stay; the rows of `runs` (ascending [a, b), all a >= first) move
        down to first, first + 1, ...; `total` rows remain. A run moves as one slice copy
        (2-3x faster than a gather of its rows); runs go in order, and each lands at or
        below where it was, so none overwrites a run still to move."""
        if not self.is_initialized:
            return
        at = first
        for a, b in runs:
            if a != at:
                self.keys[:, :, at : at + b - a] = self.keys[:, :, a:b].clone()
                self.values[:, :, at : at + b - a] = self.values[:, :, a:b].clone()
            at += b - a
        self.length = total

    @torch.inference_mode()
    def take(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of the given rows (position-free keys), to put back later with `put`."""
        return self.keys[:, :, rows].clone(), self.values[:, :, rows].clone()

    @torch.inference_mode()
    def put(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Appends position-free rows previously taken out."""
        r, n = self.length, keys.shape[-2]
        if r + n > self.capacity:
            raise RuntimeError(f"KV budget exceeded: {r} + {n} rows > capacity {self.capacity}")
        self.keys[:, :, r : r + n] = keys
        self.values[:, :, r : r + n] = values
        self.length = r + n

    @torch.inference_mode()
    def resize(self, capacity: int) -> None:
        """New buffers of `capacity` rows holding the resident ones (at most that many)."""
        if capacity < self.length:
            raise RuntimeError(f"cannot resize to {capacity} rows: {self.length} are resident")
        if self.is_initialized:
            for name in ("keys", "values"):
                old = getattr(self, name)
                new = old.new_zeros(*old.shape[:2], capacity, old.shape[-1])
                new[:, :, : self.length] = old[:, :, : self.length]
                setattr(self, name, new)
        self.capacity = capacity

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_max_length(self) -> int:
        return self.capacity

    def reset(self) -> None:
        self.length = 0

    def nbytes(self) -> int:
        if not self.is_initialized:
            return 0
        return self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()

    def resident_bytes(self) -> int:
        if not self.is_initialized:
            return 0
        return self.nbytes() * self.length // self.capacity


class HeedfulCache(Cache):
    """A transformers Cache whose attention layers are CompactingLayers."""

    def __init__(self, config, rotary: Rotary, capacity: int):
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        types = getattr(text, "layer_types", None) or ["full_attention"] * text.num_hidden_layers
        layers = []
        for t in types:
            if t in ATTENTION_LAYER_TYPES:
                layers.append(CompactingLayer(rotary, capacity))
            elif t in ("linear_attention", "conv"):
                layers.append(LinearAttentionLayer())
            else:
                raise ValueError(f"layer type {t!r} is not supported by heedful's cache")
        super().__init__(layers=layers)
        self.capacity = capacity
        # Auto selection's block summaries, per attention layer index (kept here because the
        # cache is what moves rows), and the first row whose key changed since they were
        # last brought up to date: an eviction moves every row after the evicted one, and a
        # moved row is rotated to its new position.
        self.summaries: dict = {}
        self.stale_from: int | None = None

    def _rows_changed(self, first: int) -> None:
        self.stale_from = first if self.stale_from is None else min(self.stale_from, first)

    def summaries_refreshed(self) -> None:
        """Called after a forward in which every layer brought its summaries up to date."""
        self.stale_from = None

    @property
    def attention_layers(self) -> list[CompactingLayer]:
        return [layer for layer in self.layers if isinstance(layer, CompactingLayer)]

    @property
    def has_recurrent_layers(self) -> bool:
        return any(not isinstance(layer, CompactingLayer) for layer in self.layers)

    def resident(self) -> int:
        layers = self.attention_layers
        return layers[0].length if layers else 0

    def keep(self, runs: list[tuple[int, int]]) -> None:
        """Keeps the rows of the given ascending, disjoint [a, b) runs, moved to the front in
        order. A leading run that starts at row 0 stays where it is: only the rows after it
        are copied (at a step, the window's; not the pins' and sinks' before it)."""
        runs = [(a, b) for a, b in runs if a < b]
        first = runs[0][1] if runs and runs[0][0] == 0 else 0  # rows [0, first) do not move
        total = sum(b - a for a, b in runs)
        self._rows_changed(first)
        moved = [(a, b) for a, b in runs if a >= first]
        for layer in self.attention_layers:
            layer.keep_runs(first, moved, total)

    def take(self, rows: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.take(rows) for layer in self.attention_layers]

    def put(self, taken: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for layer, (k, v) in zip(self.attention_layers, taken):
            layer.put(k, v)

    def reset(self) -> None:
        super().reset()
        self._rows_changed(0)

    def resize(self, capacity: int) -> None:
        """Changes the budget: every attention layer gets buffers of `capacity` rows."""
        for layer in self.attention_layers:
            layer.resize(capacity)
        self.capacity = capacity

    def truncate(self, rows: int) -> None:
        self._rows_changed(rows)
        for layer in self.attention_layers:
            layer.length = min(layer.length, rows)

    def allocated_bytes(self) -> int:
        return sum(layer.nbytes() for layer in self.attention_layers)

    def resident_bytes(self) -> int:
        return sum(layer.resident_bytes() for layer in self.attention_layers)
