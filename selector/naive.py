"""The slow reference engine of docs/DESIGN.md invariant 1: it frees nothing.

It keeps every KV row ever computed, with keys stored before RoPE; at each step it rotates
each key by its token's rank among the retained tokens and masks every row that is not
retained, with plain eager attention. It shares no code with the engine's cache, policy or
attention path: what is retained is re-derived here from the rules of docs/DESIGN.md:

    before a chunk of L tokens at stream position t, token j < t is retained iff it was
    never evicted, is not dropped, and (j < sinks or j is pinned or j >= t - (W - L));

and a pin (or recall) of a range with an evicted or dropped token re-encodes those tokens in
place: each attends the tokens retained before it (and the re-encoded ones before it), at its
rank among the retained, and the last token of the stream is re-encoded too, for fresh
next-token logits (with `append`, the range is re-encoded as a pinned copy at the end of the
stream instead). Rows are stored by token index, so re-encoding overwrites a token's row. If
the engine's logits match this one's after any sequence of operations, its eviction,
compaction, re-rotation and re-encoding are invisible.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, CacheLayerMixin

from heedful.selector.cache import cache_kwargs

NAME = "heedful_reference"


def _rotate(x, pos, inv_freq):
    rd = 2 * inv_freq.numel()
    f = pos.double()[:, None] * inv_freq.double()[None, :]
    cos, sin = torch.cat([f.cos(), f.cos()], -1), torch.cat([f.sin(), f.sin()], -1)
    xr = x[..., :rd].double()
    rot = torch.cat([-xr[..., rd // 2:], xr[..., : rd // 2]], -1)
    return torch.cat([(xr * cos + rot * sin).to(x.dtype), x[..., rd:]], -1)


class _KeepAllLayer(CacheLayerMixin):
    def __init__(self, engine):
        super().__init__()
        self.engine = engine

    def lazy_initialization(self, k, v):
        self.keys, self.values = k[:, :, :0], v[:, :, :0]
        self.is_initialized = True

    def update(self, k, v, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(k, v)
        e = self.engine
        k = _rotate(k, -e.new_positions, e.inv_freq)
        rows, t = e.rows, self.keys.shape[-2]
        if rows == list(range(t, t + len(rows))):  # new tokens: appended
            self.keys, self.values = torch.cat([self.keys, k], -2), torch.cat([self.values, v], -2)
        else:  # re-encoded tokens: their rows are overwritten
            index = torch.tensor(rows)
            self.keys, self.values = self.keys.index_copy(-2, index, k), self.values.index_copy(-2, index, v)
        return _rotate(self.keys, e.key_positions, e.inv_freq), self.values

    def get_seq_length(self):
        return 0 if self.keys is None else self.keys.shape[-2]

    def get_mask_sizes(self, q):
        return self.get_seq_length() + q, 0

    def get_max_length(self):
        return -1


def _masked_eager(module, q, k, v, mask=None, scaling=None, dropout=0.0, ref_allowed=None, **kw):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = (q.double() @ k.double().transpose(-1, -2)) * scaling
    s = s.masked_fill(~ref_allowed, float("-inf"))
    o = s.softmax(-1) @ v.double()
    return o.to(q.dtype).transpose(1, 2).contiguous(), None


class ReferenceEngine:
    def __init__(self, model, tokenizer, *, window: int, sinks: int, chunk: int):
        AttentionInterface.register(NAME, _masked_eager)
        self.model, self.tokenizer = model, tokenizer
        self.window, self.sinks, self.chunk = window, sinks, chunk
        self.inv_freq = model.model.rotary_emb.inv_freq.detach()
        n_layers = model.config.num_hidden_layers
        self.cache = Cache(layers=[_KeepAllLayer(self) for _ in range(n_layers)])
        self.ids: list[int] = []
        self.pinned: set[int] = set()
        self.dropped: set[int] = set()
        self.evicted: set[int] = set()
        self.logits = None

    def _retained_before(self, t: int, n_new: int) -> list[int]:
        keep = [j for j in range(t) if j not in self.evicted and j not in self.dropped
                and (j < self.sinks or j in self.pinned or j >= t - max(self.window - n_new, 0))]
        self.evicted |= set(range(t)) - set(keep)
        return keep

    @torch.inference_mode()
    def _forward(self, rows: list[int], ids: list[int], positions, key_positions, allowed) -> None:
        self.rows = rows
        self.new_positions = torch.tensor(positions)
        self.key_positions = torch.tensor(key_positions)
        impl = self.model.config._attn_implementation
        self.model.config._attn_implementation = NAME
        try:
            out = self.model(input_ids=torch.tensor([ids]), position_ids=self.new_positions[None],
                             **cache_kwargs(self.model, self.cache), use_cache=True,
                             ref_allowed=allowed)
        finally:
            self.model.config._attn_implementation = impl
        self.logits = out.logits[0, -1].float()

    def _feed(self, ids: list[int]) -> None:
        t, n = len(self.ids), len(ids)
        keep = self._retained_before(t, n)
        rank = {j: r for r, j in enumerate(keep)}
        r0 = len(keep)
        allowed = torch.zeros(n, t + n, dtype=torch.bool)
        allowed[:, keep] = True
        allowed[:, t:] = torch.ones(n, n, dtype=torch.bool).tril()
        self._forward(list(range(t, t + n)), ids, list(range(r0, r0 + n)),
                      [rank.get(j, 0) for j in range(t)] + list(range(r0, r0 + n)), allowed)
        self.ids.extend(ids)

    def _reencode(self, tokens: list[int]) -> None:
        """New rows for `tokens` (sorted), one at a time: each attends what is retained before
        it, re-encoded tokens included, at its rank in the retained order."""
        t = len(self.ids)
        self.evicted -= set(tokens)
        order = sorted(self._resident())
        rank = {j: r for r, j in enumerate(order)}
        key_positions = [rank.get(j, 0) for j in range(t)]
        for s in tokens:
            allowed = torch.zeros(1, t, dtype=torch.bool)
            allowed[0, [j for j in order if j <= s]] = True
            self._forward([s], [self.ids[s]], [rank[s]], key_positions, allowed)

    def _feed_chunked(self, ids: list[int]) -> range:
        start = len(self.ids)
        for a in range(0, len(ids), self.chunk):
            self._feed(ids[a : a + self.chunk])
        return range(start, len(self.ids))

    def prompt(self, text: str) -> None:
        self._feed_chunked(self.tokenizer(text, add_special_tokens=not self.ids)["input_ids"])

    def step(self, token_id: int) -> None:
        self._feed([token_id])

    def _resident(self) -> set[int]:
        t = len(self.ids)
        return {j for j in range(t) if j not in self.evicted and j not in self.dropped}

    def pin(self, a: int, b: int, append: bool = False) -> None:
        resident = self._resident()
        if all(j in resident for j in range(a, b)):
            self.pinned |= set(range(a, b))
        elif append:
            new = self._feed_chunked_pinned([self.ids[j] for j in range(a, b)])
            self.pinned |= set(new)
        else:
            self.pinned |= set(range(a, b))
            self.dropped -= set(range(a, b))
            t, logits = len(self.ids), self.logits
            self._retained_before(t, 0)  # the window's cut before re-encoding
            last = {t - 1} - self.dropped
            self._reencode(sorted({j for j in range(a, b) if j in self.evicted} | last))
            if not last:  # the newest token was dropped: its logits stand
                self.logits = logits

    recall = pin

    def _feed_chunked_pinned(self, ids):
        start = len(self.ids)
        self.pinned |= set(range(start, start + len(ids)))
        return self._feed_chunked(ids)

    def unpin(self, a: int, b: int) -> None:
        self.pinned -= set(range(a, b))

    def drop(self, a: int, b: int) -> None:
        self.pinned -= set(range(a, b))
        self.dropped |= set(range(a, b))
