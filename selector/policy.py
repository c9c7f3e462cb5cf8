"""The retention policy: which resident tokens keep their KV rows before each forward.

Before a chunk of L new tokens is processed, the resident set is cut to

    sinks (the first S tokens)  ∪  pins  ∪  the last (W - L) tokens before the chunk

so that each new token attends the sinks, the pins and a window of W tokens that ends with
itself (for a decode step, L = 1: the W - 1 previous tokens and itself). With auto
selection on, the rest of the budget holds a candidate pool, from which the top-k blocks are
picked per step and per KV head. Two pools (SessionConfig.auto_pool):

- "fifo" (RetentionPolicy): the most recent tokens before the window; it gives up its oldest
  token one at a time, so the budget stays full. (Evicting a whole block at once would let
  the block summaries be redone once per block_size steps instead of at every step, but
  measured on `bench retention` it cost recall: facts at the pool's old edge went a few
  steps early, 0.33 -> 0.10 at B = 96.) A fact that streamed in early is gone long before
  the question that needs it comes.
- "credit" (CreditPolicy): what the selection values stays. After each forward every pool
  row is credited with the share of (layer, KV head) selections that picked its block, and
  charged one exposure, both times the forward's tokens and both halving every `half_life`
  tokens; when the pool must give up rows it gives up those with the lowest pick rate
  (credit / exposure; ties: the oldest first), never one of its newest `probation` rows (a
  row entering the pool has had no chance to be picked yet). A rate, not a sum: a sum
  favours whatever has been in the pool longest, and the pool froze on its first rows.

A token that leaves the resident set never returns by itself: only `recall` (re-encoding)
brings its text back, as new tokens. Dropped tokens leave at once.

The budget B bounds resident rows during a forward, chunk included. The guarantee
|sinks ∪ pins| + W <= B is checked when pins are added (a pin that would break it is
refused), so the cut above always leaves room for the chunk.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from heedful.errors import BudgetError
from heedful.selector.config import POOLS, SCORES  # noqa: F401  (the names' one place is config)
from heedful.spans import Spans


@dataclass
class RetentionPolicy:
    window: int
    budget: int
    sinks: int = 0
    auto_topk: int = 0  # blocks picked per step per KV head; 0 = auto selection off
    block_size: int = 64

    # What a policy may learn from, after each forward (residency.py calls both; no-ops here):
    wants_hits = False  # auto selection counts the picks of each pool row (observe_selection)
    wants_attention = False  # the newest query's attention over the rows is collected (observe)

    def observe(self, resident: list, attention: dict) -> None:
        """The newest query's attention per layer over the rows `resident` (wants_attention)."""

    def observe_selection(self, resident: list, n_new: int, pool: tuple[int, int] = (0, 0), rows=(),
                          counts=()) -> None:
        """After a forward of the last n_new rows: which pool rows auto selection picked (wants_hits)."""

    def resized(self, window: int, budget: int) -> "RetentionPolicy":
        """The same policy with another window and budget (`Session.set`), keeping what it has
        learned (credits, heavy-hitter scores)."""
        fields = {f.name for f in dataclasses.fields(self)}
        new = dataclasses.replace(self, window=window, budget=budget)
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k not in fields})
        return new

    def fixed_rows(self, pins: Spans) -> int:
        """Rows that sinks and pins can occupy at most: |sinks ∪ pins|."""
        return pins.union_count(self.sinks)

    def check_pins(self, pins: Spans, extra: int = 0) -> None:
        """Refuses pins (and `extra` fixed rows: folds' gists) that leave no room for the window."""
        fixed = self.fixed_rows(pins) + extra
        need = fixed + self.window
        if need > self.budget:
            what = "sinks, pins and gists" if extra else "sinks and pins"
            raise BudgetError(
                f"pins would overflow the KV budget: {what} {fixed} + window "
                f"{self.window} = {need} rows > budget {self.budget} (unpin something or raise --budget)"
            )

    def is_fixed(self, t: int, pins: Spans) -> bool:
        return t < self.sinks or t in pins

    def always(self, t: int, stream_len: int, n_new: int, pins: Spans) -> bool:
        """Whether resident token t stays for the next n_new tokens at stream_len: a sink,
        a pin, or within the window that ends with the last of them."""
        return t >= stream_len - max(self.window - n_new, 0) or self.is_fixed(t, pins)

    # The two methods below run before every forward. `resident` is sorted, so each pin span
    # and the window are found by bisection: O(spans · log R) Python work per step instead of
    # O(R) (at a 32k budget a per-token loop cost ~6 ms a step). They return row numbers
    # (positions in `resident`) as Spans.

    def always_rows(self, resident: list[int], stream_len: int, n_new: int, pins: Spans) -> Spans:
        """The rows of the resident tokens for which `always` holds."""
        lo = stream_len - max(self.window - n_new, 0)  # the window's first token
        fixed = pins.copy()
        fixed.add(0, self.sinks)
        rows = Spans()
        for a, b in fixed:
            if a >= lo:
                break
            rows.add(bisect_left(resident, a), bisect_left(resident, min(b, lo)))
        rows.add(bisect_left(resident, lo), len(resident))
        return rows

    def keep_rows(self, resident: list[int], stream_len: int, n_new: int, pins: Spans, reserve: int = 0) -> Spans:
        """The rows to keep before processing n_new tokens at stream_len: `always_rows`, and
        with auto selection the most recent of the others, as many as the budget holds once
        `reserve` rows (tokens about to be re-encoded in place) are set aside."""
        rows = self.always_rows(resident, stream_len, n_new, pins)
        room = self.budget - n_new - reserve - rows.total()
        if self.auto_topk and room > 0:
            for a, b in reversed(list(rows.complement(len(resident)))):
                take = min(room, b - a)
                rows.add(b - take, b)
                room -= take
                if not room:
                    break
        return rows


def policy_for(config) -> RetentionPolicy:
    """The policy a resolved SessionConfig asks for (its auto_pool, POLICIES)."""
    return POLICIES[config.auto_pool](config.window, config.budget, config.sinks, config.auto_topk, config.block_size)


def rows_of(resident: list[int], tokens: list[int]) -> Spans:
    """The rows of `tokens` (a sorted subset of `resident`) as Spans."""
    rows = Spans()
    for t in tokens:
        r = bisect_left(resident, t)
        rows.add(r, r + 1)
    return rows


@dataclass
class CreditPolicy(RetentionPolicy):
    """Auto selection's pool kept by credit (see the module's docstring): sinks, pins and the
    window as RetentionPolicy; of the other resident rows, when more than the budget holds,
    those with the lowest pick rate leave (ties: the oldest), never one of the newest
    `probation` (None: block_size). Picks come from `observe_selection`, which the encoder
    calls after each forward with the share of (layer, KV head) selections that picked each
    row (StepPlan.auto.hits) and the pool's rows, each charged one exposure; both halve every
    `half_life` tokens (None: the budget). rate=False ranks by the credit alone (measured:
    the pool then keeps its first rows for good, docs/engine.md).

    Credits are an array aligned with the resident rows (`_snap`, the order keys it was last
    aligned with), scaled by one lazy decay factor (`_w`: a pick now weighs 1/decay**T of a
    pick at T = 0), so a step is a few vectorized O(R) operations and O(pin spans + rows
    leaving) Python. Operations that change the resident rows behind the policy's back
    (drop, rewind, recall, folds) are found by comparing the order keys, and the credits are
    carried over by token."""

    half_life: int | None = None  # tokens
    probation: int | None = None  # rows
    rate: bool = True

    wants_hits = True  # the encoder asks the attention for pick counts

    def __post_init__(self):
        self._snap: list = []  # order keys the credits are aligned with
        self._c = np.zeros(0)  # of each: credit * _w
        self._e = np.zeros(0)  # exposure * _w (tokens spent in the pool)
        self._w = 1.0

    @property
    def decay(self) -> float:
        """Per token."""
        return 0.5 ** (1.0 / max(1, self.budget if self.half_life is None else self.half_life))

    def credit_of(self, t, column: int = 0) -> float:
        """Token t's decayed picks (column 1: its decayed exposure); 0 if it has none."""
        i = bisect_left(self._snap, t)
        a = self._e if column else self._c
        return float(a[i]) / self._w if i < len(self._snap) and self._snap[i] == t else 0.0

    def _align(self, resident: list) -> None:
        """Credits aligned with `resident` (sorted order keys), carried over by token."""
        if resident == self._snap:
            return
        c, e = np.zeros(len(resident)), np.zeros(len(resident))
        if self._snap and resident:
            old, new = np.asarray(self._snap, dtype=np.float64), np.asarray(resident, dtype=np.float64)
            i = np.minimum(np.searchsorted(old, new), len(old) - 1)
            same = old[i] == new
            c[same], e[same] = self._c[i[same]], self._e[i[same]]
        self._snap, self._c, self._e = list(resident), c, e

    def observe_selection(self, resident: list, n_new: int, pool: tuple[int, int] = (0, 0), rows=(),
                          counts=()) -> None:
        """After a forward of the last n_new rows of `resident` whose pool was the ranks
        [pool[0], pool[1]): the rows at ranks pool[0] + `rows` were picked by a share `counts`
        of the selections. The new rows start without credit (a token index that comes back
        after a rewind or a recall is a new row)."""
        pool_start, pool_end = pool
        k = len(resident) - n_new
        if resident[:k] == self._snap:
            self._snap.extend(resident[k:])
            self._c = np.concatenate([self._c, np.zeros(n_new)])
            self._e = np.concatenate([self._e, np.zeros(n_new)])
        else:
            self._align(resident)
            self._c[k:] = self._e[k:] = 0.0
        self._w /= self.decay ** n_new
        if len(rows):
            np.add.at(self._c, pool_start + np.asarray(rows, dtype=np.int64),
                      np.asarray(counts, dtype=np.float64) * (self._w * n_new))
        self._e[pool_start:pool_end] += self._w * n_new
        if self._w > 1e100:
            self._c /= self._w
            self._e /= self._w
            self._w = 1.0

    def _value(self, a: int, b: int) -> np.ndarray:
        """What rows [a, b) are ranked by: pick rate, or credit."""
        if not self.rate:
            return self._c[a:b]
        return self._c[a:b] / np.maximum(self._e[a:b], 1e-300)

    def keep_rows(self, resident: list, stream_len: int, n_new: int, pins: Spans, reserve: int = 0) -> Spans:
        rows = self.always_rows(resident, stream_len, n_new, pins)
        if not self.auto_topk:
            return rows
        room = self.budget - n_new - reserve - rows.total()
        pool = list(rows.complement(len(resident)))
        count = sum(b - a for a, b in pool)
        if count <= max(room, 0):
            return Spans([(0, len(resident))]) if resident else rows
        self._align(resident)
        excess = count - max(room, 0)
        probation = self.block_size if self.probation is None else self.probation
        older, left = [], count - probation  # the pool's rows out of probation, as spans
        for a, b in pool:
            if left <= 0:
                break
            older.append((a, min(b, a + left)))
            left -= b - a
        n_older = sum(b - a for a, b in older)
        if excess >= n_older:  # more must go than is out of probation: the oldest go
            gone, left = [], excess
            for a, b in pool:
                gone += range(a, a + min(b - a, left))
                left -= min(b - a, left)
        else:
            v = np.concatenate([self._value(a, b) for a, b in older])
            thr = np.partition(v, excess - 1)[excess - 1]
            pick = np.flatnonzero(v < thr)
            pick = np.sort(np.concatenate([pick, np.flatnonzero(v == thr)[: excess - len(pick)]]))  # ties: oldest
            starts = np.cumsum([0] + [b - a for a, b in older])  # position in v -> rank
            span = np.searchsorted(starts, pick, side="right") - 1
            gone = (pick - starts[span] + np.asarray([a for a, _ in older])[span]).tolist()
        self._c, self._e = np.delete(self._c, gone), np.delete(self._e, gone)
        out, at, snap = Spans(), 0, []  # every row but those that leave (the pool is the fixed rows' complement)
        for g in [*gone, len(resident)]:
            if g > at:
                out.add(at, g)
                snap += resident[at:g]
            at = g + 1
        self._snap = snap
        return out


POLICIES = {"credit": CreditPolicy, "fifo": RetentionPolicy}  # auto_pool -> policy (POOLS, in config.py)
