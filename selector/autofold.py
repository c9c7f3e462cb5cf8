"""Automatic folding, NSA's compression branch: tokens that leave the window are folded into
summary rows, one per block of `fold_block` tokens, whose key and value a compressor makes
from the block's position-free keys and values (compressor.py: their means, or a learned
pooling). A block's rows wait in `pending` until its last token has left. The summaries sit
in the resident order right after their block (order key block_end - 0.5, so a compacted position puts them where
the block stood) and are kept like pins, at most `fold_budget` of them: the oldest leave
first. Pinned tokens of a block stay as they are and are not pooled.

Summaries are the engine's own, like the window: nothing is logged (the config says
fold_budget, fold_block and fold_compressor, so a replay pools the same rows); a resume
rebuilds them by streaming the tail again (restore.py).
"""

from __future__ import annotations

import bisect

import torch

from heedful.selector.compressor import MeanPool, load_compressor, model_sizes
from heedful.selector.config import RANK_HEADS
from heedful.spans import Spans


def compressor_for(session):
    """The compressor a session's config names (compressor.py), checked against its model and
    the digest the config holds (config.resolve reads it the first time); None: the mean. Under
    tensor parallelism, the share of the rank's key/value heads."""
    config = session.config
    if config.fold_compressor in (None, "mean"):
        return None
    sizes = model_sizes(session.model)  # all layers attend: fold refuses recurrent ones
    c = load_compressor(config.fold_compressor, **sizes, block=config.fold_block, device=session.device,
                        expect=config.fold_compressor_digest)
    share = getattr(session.model, RANK_HEADS, None)
    if share is not None:
        heads = sizes["heads"]
        rank, ranks = share
        c = c.select_heads(rank * heads // ranks, (rank + 1) * heads // ranks)
    return c


class AutoFold:
    def __init__(self, rows: int, block: int, compressor=None):
        self.rows, self.block = rows, block
        self.compressor = compressor if compressor is not None else MeanPool()
        # block -> [places in the block, [[(keys [B, H, n, D], values) per attention layer] per absorb]]
        self.pending: dict[int, list] = {}
        self.keys: list[float] = []  # order keys of the summary rows now resident, ascending
        self.last = -1  # the newest token that has left with the window
        # the newest block summarized (blocks are, in order): a token of it or of an older one
        # that leaves again later (recalled, then unpinned) is not pooled twice
        self.done = -1

    def spans(self) -> list[tuple[float, float]]:
        """Where the policy finds the summary rows (kept like pins)."""
        return [(k, k + 0.25) for k in self.keys]

    def absorb(self, session, rows: list[int]) -> None:
        """Keeps the rows about to leave with the window (row numbers of int tokens) with their
        blocks, before the cache frees them."""
        rows = [r for r in rows if session.resident_tokens[r] // self.block > self.done]
        if not rows:
            return
        taken = session.cache.take(torch.tensor(rows, dtype=torch.long, device=session.device))
        tokens = [session.resident_tokens[r] for r in rows]
        blocks = [t // self.block for t in tokens]
        for b in sorted(set(blocks)):
            picked = [i for i, x in enumerate(blocks) if x == b]
            idx = torch.tensor(picked, device=session.device)
            kv = [(k.index_select(2, idx), v.index_select(2, idx)) for k, v in taken]
            places = [tokens[i] - b * self.block for i in picked]
            entry = self.pending.setdefault(b, [[], []])
            entry[0] += places
            entry[1].append(kv)  # joined once, when the block is pooled
        self.last = max(self.last, *tokens)

    def emit(self, session) -> None:
        """Turns every block whose last token has left into a summary row."""
        done = [b for b in sorted(self.pending) if (b + 1) * self.block - 1 <= self.last]
        for b in done:
            places, parts = self.pending.pop(b)
            rows = [(torch.cat([p[i][0] for p in parts], 2), torch.cat([p[i][1] for p in parts], 2))
                    for i in range(len(parts[0]))]
            if len(self.keys) >= self.rows:
                self._drop(session, self.keys[0])
            key = (b + 1) * self.block - 0.5
            self.done = b
            layers = session.cache.attention_layers
            self._insert(session, key, [tuple(x.to(layer.keys.dtype) for x in self._pool(i, k, v, places))
                                        for i, ((k, v), layer) in enumerate(zip(rows, layers))])

    def _pool(self, layer: int, k: torch.Tensor, v: torch.Tensor, places: list[int]):
        """One block's rows ([B, H, n, D], in `places` of the block) -> its summary [B, H, 1, D]."""
        shape = (*k.shape[:2], 1, self.block, k.shape[-1])
        idx = torch.tensor(places, device=k.device)
        kb = k.new_zeros(shape).index_copy_(3, idx, k[:, :, None])
        vb = v.new_zeros(shape).index_copy_(3, idx, v[:, :, None])
        present = torch.zeros(1, self.block, dtype=torch.bool, device=k.device)
        present[0, idx] = True
        with torch.no_grad():
            pk, pv = self.compressor.pool(layer, kb, vb, present)
        return pk, pv

    def _insert(self, session, key: float, kv: list) -> None:
        res = session.resident_tokens
        r = bisect.bisect_left(res, key)
        session.cache.insert(r, kv)
        res.insert(r, key)
        bisect.insort(self.keys, key)

    def _drop(self, session, key: float) -> None:
        r = bisect.bisect_left(session.resident_tokens, key)
        session._cut_rows(Spans([(0, r), (r + 1, len(session.resident_tokens))]), "fold")
        self.keys.remove(key)

    def cut(self, limit: int) -> None:
        """A rewind to a stream whose window starts at `limit`: only blocks wholly before it
        keep their summaries (the rewind cuts the others' rows); a block the window starts in
        is pooled again, from its tokens that leave again."""
        self.pending = {b: e for b, e in self.pending.items() if (b + 1) * self.block <= limit}
        self.keys = [k for k in self.keys if k < limit]
        self.last = min(self.last, limit - 1)
        self.done = min(self.done, limit // self.block - 1)
