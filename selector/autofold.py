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


def compressor_for(model, config, device):
    """The compressor a session's config names (compressor.py), checked against its model and
    the digest the config holds (config.resolve reads it the first time); None: the mean. Under
    tensor parallelism, the share of the rank's key/value heads."""
    if config.fold_compressor in (None, "mean"):
        return None
    sizes = model_sizes(model)  # all layers attend: fold refuses recurrent ones
    c = load_compressor(config.fold_compressor, **sizes, block=config.fold_block, device=device,
                        expect=config.fold_compressor_digest)
    share = getattr(model, RANK_HEADS, None)
    if share is not None:
        heads = sizes["heads"]
        rank, ranks = share
        c = c.select_heads(rank * heads // ranks, (rank + 1) * heads // ranks)
    return c


class AutoFold:
    """The summaries' state (residency.py places and removes their rows): blocks waiting for
    their last token, the summary keys now resident, and how far pooling has got."""

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

    def wants(self, token: int) -> bool:
        """Whether a token leaving now is pooled (its block not summarized yet)."""
        return token // self.block > self.done

    def full(self) -> bool:
        return len(self.keys) >= self.rows

    def absorb(self, tokens: list[int], taken: list, device) -> None:
        """Keeps the rows of `tokens` (position-free copies, per layer: cache.take) with
        their blocks."""
        blocks = [t // self.block for t in tokens]
        for b in sorted(set(blocks)):
            picked = [i for i, x in enumerate(blocks) if x == b]
            idx = torch.tensor(picked, device=device)
            kv = [(k.index_select(2, idx), v.index_select(2, idx)) for k, v in taken]
            entry = self.pending.setdefault(b, [[], []])
            entry[0] += [tokens[i] - b * self.block for i in picked]
            entry[1].append(kv)  # joined once, when the block is pooled
        self.last = max(self.last, *tokens)

    def ready(self, dtypes: list) -> list:
        """(order key, the summary's (key, value) per attention layer in `dtypes`) of every
        block whose last token has left, in order; they are no longer pending."""
        out = []
        for b in [b for b in sorted(self.pending) if (b + 1) * self.block - 1 <= self.last]:
            places, parts = self.pending.pop(b)
            rows = [(torch.cat([p[i][0] for p in parts], 2), torch.cat([p[i][1] for p in parts], 2))
                    for i in range(len(parts[0]))]
            self.done = b
            out.append(((b + 1) * self.block - 0.5, [tuple(x.to(dt) for x in self._pool(i, k, v, places))
                                                     for i, ((k, v), dt) in enumerate(zip(rows, dtypes))]))
        return out

    def placed(self, key: float) -> None:
        bisect.insort(self.keys, key)

    def left(self, key: float) -> None:
        self.keys.remove(key)

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

    def cut(self, limit: int) -> None:
        """A rewind to a stream whose window starts at `limit`: only blocks wholly before it
        keep their summaries (the rewind cuts the others' rows); a block the window starts in
        is pooled again, from its tokens that leave again."""
        self.pending = {b: e for b, e in self.pending.items() if (b + 1) * self.block <= limit}
        self.keys = [k for k in self.keys if k < limit]
        self.last = min(self.last, limit - 1)
        self.done = min(self.done, limit // self.block - 1)
