"""The KV cache: fixed-capacity slot buffers per attention layer; rows never move.

Each attention layer keeps keys (rotated, as the model produced them or as re-rotated since)
and values in [B, H, capacity, D] buffers allocated once (again only when `set(budget=)`
changes the capacity): resident memory is constant however long the session runs. Which
slot holds which row and where its key is rotated is integer bookkeeping shared by all
layers (slots.py). A forward writes its rows into free slots and attention reads the
buffers' occupied prefix; when a token leaves, its slot is freed and nothing is copied.

Rows whose rank changes relative to the newest (the fixed rows before an eviction) are
re-rotated from a position-free copy of their rotary dimensions (`masters`, made the first
time a row needs it), so a key is never rotated twice from a rotated copy (rope.py).

Linear-attention layers of hybrid models (Qwen3.5, Qwen3-Next) keep their recurrent state in
transformers' own layer class; eviction does not apply to them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, LinearAttentionLayer

from heedful.selector.rope import Rotary
from heedful.selector.slots import Slots

def cache_kwargs(model, cache) -> dict:
    """The keyword a model's forward takes its cache by: `cache` since transformers renamed
    `past_key_values` (the old name warns on every forward until 5.40), else the old one."""
    cls = type(model)
    name = _CACHE_KEYWORD.get(cls)
    if name is None:
        params = inspect.signature(model.forward).parameters
        name = _CACHE_KEYWORD[cls] = "cache" if "cache" in params else "past_key_values"
    return {name: cache}


_CACHE_KEYWORD: dict[type, str] = {}

ATTENTION_LAYER_TYPES = {"full_attention", "sliding_attention", "chunked_attention"}


@dataclass
class Step:
    """One forward's rows: their slots (as a tensor for index_copy_), the positions they are
    rotated at, how many slots attention reads, and the mask when it needs one: [L, hi] bool,
    occupied slots and the chunk's causal tail (None for one new row and no hole)."""

    slots: list[int]
    slot_index: torch.Tensor
    positions: list[int]
    hi: int
    position_ids: torch.Tensor
    mask: torch.Tensor | None = None
    order: torch.Tensor | None = None  # slot of each row by rank, new rows last (when asked)


class Bank:
    """Every attention layer's rows in one set of tensors: keys and values [layers, B, H,
    capacity, D], and the masters [layers, B, H, capacity, rotary_dim] once a row needs one.
    A re-rotation over some slots is then a handful of ops for all layers, not per layer (at
    batch 1 on a GPU each op is a kernel launch)."""

    def __init__(self, layers: int, key_states: torch.Tensor, value_states: torch.Tensor, capacity: int,
                 rotary_dim: int):
        b, h, _, d = key_states.shape
        self.shape = (b, h, d, value_states.shape[-1])
        self.keys = key_states.new_zeros(layers, b, h, capacity, d)
        self.values = value_states.new_zeros(layers, b, h, capacity, value_states.shape[-1])
        self.rotary_dim = rotary_dim
        self.masters: torch.Tensor | None = None
        self.rot = self.keys[..., :rotary_dim]  # the rotary dims, a view

    def ensure_masters(self) -> torch.Tensor:
        if self.masters is None:
            self.masters = self.keys.new_zeros(*self.keys.shape[:4], self.rotary_dim)
        return self.masters

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values, self.masters) if t is not None)


class SlotLayer(CacheLayerMixin):
    """One attention layer: views of its rows in the owner's Bank. The owning HeedfulCache
    says which slots a forward writes (`owner.step`)."""

    def __init__(self, owner: "HeedfulCache", index: int):
        super().__init__()
        self.owner, self.index = owner, index
        self._view: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.owner.bank_for(key_states, value_states)

    def attach(self, bank: Bank) -> None:
        self.keys, self.values = bank.keys[self.index], bank.values[self.index]
        self.dtype, self.device = self.keys.dtype, self.keys.device
        self._view = None
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        """Writes the forward's rows into their slots; returns the buffers' first `hi` slots
        (views, kept from step to step while `hi` stays: no op per step)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        step = self.owner.step
        self.keys.index_copy_(2, step.slot_index, key_states)
        self.values.index_copy_(2, step.slot_index, value_states)
        if self._view is None or self._view[0] != step.hi:
            self._view = (step.hi, self.keys[:, :, : step.hi], self.values[:, :, : step.hi])
        return self._view[1], self._view[2]

    def get_seq_length(self) -> int:
        return len(self.owner.slots)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return len(self.owner.slots) + query_length, 0

    def get_max_length(self) -> int:
        return self.owner.capacity

    def reset(self) -> None:
        self._view = None


class HeedfulCache(Cache):
    """A transformers Cache whose attention layers are SlotLayers sharing one Slots and one
    Bank."""

    def __init__(self, config, rotary: Rotary, capacity: int, max_positions: int | None = None):
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        types = getattr(text, "layer_types", None) or ["full_attention"] * text.num_hidden_layers
        self.rotary, self.capacity, self.max_positions = rotary, capacity, max_positions
        self.slots = Slots(capacity, max_positions)
        self.bank: Bank | None = None
        self.step: Step | None = None
        self._one: dict[int, torch.Tensor] = {}  # slot -> tensor([slot]): a decode step's index, made once
        self._last_position: tuple[int, torch.Tensor] | None = None
        # the rows re-rotated at the last forward (at a decode step, the fixed rows: the same
        # every step): (their slots and generations, slot index, masters, masters rolled)
        self._fixed: tuple | None = None
        layers = []
        for t in types:
            if t in ATTENTION_LAYER_TYPES:
                layers.append(SlotLayer(self, sum(isinstance(x, SlotLayer) for x in layers)))
            elif t in ("linear_attention", "conv"):
                layers.append(LinearAttentionLayer())
            else:
                raise ValueError(f"layer type {t!r} is not supported by heedful's cache")
        super().__init__(layers=layers)
        # Auto selection's block summaries, per attention layer index (rank order), and the
        # first rank whose key changed (left, arrived before others, or was re-rotated) since
        # they were last brought up to date.
        self.summaries: dict = {}
        self.stale_from: int | None = None

    def _rows_changed(self, first: int | None) -> None:
        if first is not None:
            self.stale_from = first if self.stale_from is None else min(self.stale_from, first)

    rows_changed = _rows_changed  # for the static step (static.py)

    def summaries_refreshed(self) -> None:
        """Called after a forward in which every layer brought its summaries up to date."""
        self.stale_from = None

    @property
    def attention_layers(self) -> list[SlotLayer]:
        return [layer for layer in self.layers if isinstance(layer, SlotLayer)]

    @property
    def has_recurrent_layers(self) -> bool:
        return any(not isinstance(layer, SlotLayer) for layer in self.layers)

    def bank_for(self, key_states: torch.Tensor, value_states: torch.Tensor) -> Bank:
        """The bank, allocated by the first layer that writes (every attention layer the same
        shape: true of every architecture heedful runs)."""
        shape = (*key_states.shape[:2], key_states.shape[-1], value_states.shape[-1])
        if self.bank is None:
            self._attach(Bank(len(self.attention_layers), key_states, value_states, self.capacity,
                              self.rotary.rotary_dim))
        elif self.bank.shape != shape:
            raise ValueError(f"heedful's cache needs every attention layer's keys and values to have one shape: "
                             f"{self.bank.shape} and {shape}")
        return self.bank

    def _attach(self, bank: Bank) -> None:
        self.bank = bank
        for layer in self.attention_layers:
            layer.attach(bank)

    def resident(self) -> int:
        return len(self.slots)

    # ------------------------------------------------------------------ rotation
    def _index(self, slots: list[int], device) -> torch.Tensor:
        if len(slots) == 1:
            t = self._one.get(slots[0])
            if t is None or t.device != device:
                t = self._one[slots[0]] = torch.tensor(slots, device=device)
            return t
        return torch.tensor(slots, device=device)

    def _tables(self, positions: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.rotary.tables(max(positions) + 1, device)
        a = positions[0]
        if positions[-1] - a + 1 == len(positions):  # a run: views, no gather
            return cos[a : a + len(positions)], sin[a : a + len(positions)]
        idx = torch.tensor(positions, device=device)
        return cos[idx], sin[idx]

    @torch.inference_mode()
    def master(self, ranks: list[int]) -> None:
        """Gives the rows at `ranks` that have none their masters (position-free rotary dims),
        from the keys as written: before their first re-rotation."""
        bank = self.bank
        if not ranks or bank is None:
            return
        fresh = [(s, self.slots.pos[r]) for r in ranks if not self.slots.mastered[s := self.slots.slots[r]]]
        if fresh:
            device = bank.keys.device
            f_index = self._index([s for s, _ in fresh], device)
            cos, sin = self._tables([p for _, p in fresh], device)
            k = bank.rot.index_select(3, f_index)
            bank.ensure_masters().index_copy_(3, f_index, self.rotary.apply(k, cos, sin, inverse=True))
            for s, _ in fresh:
                self.slots.mastered[s] = 1

    def forget_positions(self) -> None:
        """The next step makes its position ids afresh (a static step wrote its own)."""
        self._last_position = None

    @torch.inference_mode()
    def _rotate_rows(self, ranks: list[int], positions: list[int]) -> None:
        """Re-rotates the keys of the rows at `ranks` to `positions`, from their masters."""
        bank = self.bank
        if ranks and bank is not None:
            device = bank.keys.device
            slots = [self.slots.slots[r] for r in ranks]
            self.master(ranks)
            gen = self.slots.generation
            key = tuple((s, gen[s]) for s in slots)
            if self._fixed is None or self._fixed[0] != key or self._fixed[1].device != device:
                index = self._index(slots, device)
                m = bank.masters.index_select(3, index).float()
                self._fixed = (key, index, m, torch.roll(m, bank.rotary_dim // 2, dims=-1))
            _, index, m, rolled = self._fixed
            cos, sin = self._tables(positions, device)
            rotated = self.rotary.apply(m, cos, sin, rolled=rolled)
            bank.rot.index_copy_(3, index, rotated if rotated.dtype == bank.keys.dtype else rotated.to(bank.keys.dtype))
        self.slots.set_positions(ranks, positions)
        if ranks:
            self._rows_changed(min(ranks))

    # ------------------------------------------------------------------ a forward
    @torch.inference_mode()
    def begin(self, n: int, device, order: bool = False) -> Step:
        """Before a forward of n rows: re-rotates the rows out of line, allocates the new
        rows' slots and says where attention reads (`self.step`, used by every layer)."""
        a = self.slots.align(n)
        self._rotate_rows(a.ranks, a.positions)
        r = len(self.slots)
        new = self.slots.alloc(n)
        hi = self.slots.exact_hi(new)
        mask = None
        if n > 1 or hi > r + n:
            mask = torch.zeros(n, hi, dtype=torch.bool, device=device)
            if r:
                mask[:, torch.tensor(self.slots.slots, device=device)] = True
            mask[:, torch.tensor(new, device=device)] = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        ordered = torch.tensor(self.slots.slots + new, device=device) if order else None
        self.step = Step(new, self._index(new, device), a.new_positions, hi, self._position_ids(a.new_positions, device),
                         mask, ordered)
        return self.step

    def _position_ids(self, positions: list[int], device) -> torch.Tensor:
        """[1, n] position ids. A decode step's is the last one's plus one, but for a re-base:
        that tensor is bumped in place (one op instead of a new tensor's two)."""
        last = self._last_position
        if len(positions) == 1 and last is not None and last[0] + 1 == positions[0] and last[1].device == device:
            last[1].add_(1)
        else:
            last = (positions[0] - 1, torch.tensor([positions], device=device))
        self._last_position = (positions[-1], last[1]) if len(positions) == 1 else None
        return last[1]

    def commit(self) -> None:
        s = self.step
        self.slots.append(s.slots, s.positions)
        self.step = None

    def abort(self) -> None:
        """A forward that failed: its slots are freed (a layer may hold half its rows)."""
        if self.step is not None:
            self.slots.release(self.step.slots)
            self.step = None

    # ------------------------------------------------------------------ rows leaving and returning
    def keep(self, runs: list[tuple[int, int]]) -> None:
        """Keeps the rows of the given ascending, disjoint [a, b) rank runs; the others' slots
        are freed. Nothing is copied."""
        self._rows_changed(self.slots.keep([(a, b) for a, b in runs if a < b]))

    def truncate(self, rows: int) -> None:
        if rows < len(self.slots):
            self._rows_changed(rows)
        self.slots.truncate(rows)

    @torch.inference_mode()
    def take(self, ranks: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Copies of the given rows' position-free keys and values (per attention layer), to
        put back with `put` or `insert`."""
        ranks = ranks.tolist()
        bank = self.bank
        if not ranks or bank is None:
            return []
        device = bank.keys.device
        slots = [self.slots.slots[r] for r in ranks]
        index = self._index(slots, device)
        cos, sin = self._tables([self.slots.pos[r] for r in ranks], device)
        rd = bank.rotary_dim
        k = bank.keys.index_select(3, index)
        free = self.rotary.apply(k[..., :rd], cos, sin, inverse=True)
        have = [bool(self.slots.mastered[s]) for s in slots]
        if any(have):
            have = torch.tensor(have, dtype=torch.bool, device=device)[:, None]
            free = torch.where(have, bank.masters.index_select(3, index), free)
        k[..., :rd] = free
        v = bank.values.index_select(3, index)
        return [(k[i], v[i]) for i in range(k.shape[0])]

    @torch.inference_mode()
    def put(self, taken: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Appends position-free rows (taken out earlier, or pooled) after the newest."""
        if not taken:
            return
        n = taken[0][0].shape[-2]
        at = self.slots.next_position()
        slots, positions = self.slots.alloc(n), list(range(at, at + n))
        self._write(slots, positions, taken)
        self.slots.append(slots, positions)

    @torch.inference_mode()
    def insert(self, rank: int, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Puts one position-free row at `rank`; the rows after it keep their distance to
        the query (re-rotated one position on)."""
        (slot,) = self.slots.alloc(1)
        after, moved, at = self.slots.insert(rank, slot)
        self._rotate_rows(after, moved)
        self._write([slot], [at], kv)
        self._rows_changed(rank)

    def _write(self, slots: list[int], positions: list[int], kv) -> None:
        """Writes position-free keys (rotated to `positions`) and values into slots; the
        masters keep the keys' rotary dims."""
        bank = self.bank_for(*kv[0])
        keys = torch.stack([k for k, _ in kv]).to(bank.keys.dtype)
        index = self._index(slots, keys.device)
        cos, sin = self._tables(positions, keys.device)
        rd = bank.rotary_dim
        bank.ensure_masters().index_copy_(3, index, keys[..., :rd])
        keys[..., :rd] = self.rotary.apply(keys[..., :rd], cos, sin)
        bank.keys.index_copy_(3, index, keys)
        bank.values.index_copy_(3, index, torch.stack([v for _, v in kv]).to(bank.values.dtype))
        for s in slots:
            self.slots.mastered[s] = 1

    def keys_in_order(self, layer: SlotLayer) -> torch.Tensor:
        """A layer's resident keys, position-free, by rank (for tests and diagnostics)."""
        return self.take(torch.arange(len(self.slots)))[layer.index][0]

    def values_in_order(self, layer: SlotLayer) -> torch.Tensor:
        index = torch.tensor(self.slots.slots, dtype=torch.long, device=layer.values.device)
        return layer.values.index_select(2, index)

    def reset(self) -> None:
        super().reset()
        self.slots.reset()
        self._rows_changed(0)

    @torch.inference_mode()
    def resize(self, capacity: int) -> None:
        """Changes the budget: new buffers of `capacity` slots, the resident rows packed at
        the front in rank order."""
        if capacity < len(self.slots):
            raise RuntimeError(f"cannot resize to {capacity} rows: {len(self.slots)} are resident")
        old = self.slots
        if self.bank is not None:
            index = torch.tensor(old.slots, dtype=torch.long, device=self.bank.keys.device)
            for name in ("keys", "values", "masters"):
                buf = getattr(self.bank, name)
                if buf is not None:
                    new = buf.new_zeros(*buf.shape[:3], capacity, buf.shape[-1])
                    new[:, :, :, : len(old)] = buf.index_select(3, index)
                    setattr(self.bank, name, new)
            self.bank.rot = self.bank.keys[..., : self.bank.rotary_dim]
            self._attach(self.bank)
        fresh = Slots(capacity, self.max_positions)
        fresh.append(fresh.alloc(len(old)), list(old.pos))
        for i, s in enumerate(old.slots):
            fresh.mastered[i] = old.mastered[s]
        self.slots, self.capacity = fresh, capacity
        self._one.clear()
        self._fixed = None  # slots were renumbered
        self._rows_changed(0)

    def allocated_bytes(self) -> int:
        return self.bank.nbytes() if self.bank is not None else 0

    def resident_bytes(self) -> int:
        return self.allocated_bytes() * len(self.slots) // self.capacity
