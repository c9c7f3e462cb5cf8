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
  row is credited with the number of (layer, KV head) selections that picked its block,
  times the forward's tokens, and credits decay by `decay` per token; when the pool must
  give up rows it gives up the lowest-credit ones (ties: the oldest first), never one of
  its newest `probation` rows (a row entering the pool has had no chance to be picked).

A token that leaves the resident set never returns by itself: only `recall` (re-encoding)
brings its text back, as new tokens. Dropped tokens leave at once.

The budget B bounds resident rows during a forward, chunk included. The guarantee
|sinks ∪ pins| + W <= B is checked when pins are added (a pin that would break it is
refused), so the cut above always leaves room for the chunk.
"""

from __future__ import annotations

import dataclasses
import heapq
from bisect import bisect_left
from dataclasses import dataclass

from heedful.errors import BudgetError, HeedfulError
from heedful.spans import Spans

POOLS = ("credit", "fifo")  # auto selection's candidate pool: most valued by selection, or most recent
SCORES = ("minmax", "mean", "fla")  # block scoring: heedful.kernels.block_select.KINDS (checked by a test)


@dataclass
class RetentionPolicy:
    window: int
    budget: int
    sinks: int = 0
    auto_topk: int = 0  # blocks picked per step per KV head; 0 = auto selection off
    block_size: int = 64

    def validate(self, max_positions: int | None = None, sliding_window: int | None = None) -> None:
        if self.window < 1:
            raise BudgetError(f"--window {self.window}: must be at least 1")
        if self.sinks < 0:
            raise BudgetError(f"--sinks {self.sinks}: must be >= 0")
        if self.budget < self.window + self.sinks:
            raise BudgetError(
                f"--budget {self.budget} is smaller than window {self.window} + sinks {self.sinks}"
            )
        if max_positions is not None and self.budget > max_positions:
            raise BudgetError(
                f"--budget {self.budget} exceeds the model's max_position_embeddings ({max_positions}): "
                "compacted positions run from 0 to budget - 1"
            )
        if sliding_window is not None and self.budget > sliding_window:
            # compacted positions keep every resident row inside a windowed layer's own window
            # only if the budget fits in it; past that, those layers would read less than is kept
            raise BudgetError(f"--budget {self.budget} exceeds the model's sliding window ({sliding_window} "
                              f"positions): its windowed layers cannot read that many rows; use --budget <= "
                              f"{sliding_window}")
        if self.auto_topk < 0 or self.block_size < 1:
            raise BudgetError("auto selection: topk must be >= 0 and block size >= 1")

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
    """The policy a SessionConfig asks for (its auto_pool; the scoring kind is the
    attention's, checked here so that a bad one is refused before anything runs)."""
    pool, score = getattr(config, "auto_pool", "fifo"), getattr(config, "auto_score", "minmax")
    if pool not in POOLS:
        raise HeedfulError(f"--auto-pool {pool!r}: expected one of {', '.join(POOLS)}")
    if score not in SCORES:
        raise HeedfulError(f"--auto-score {score!r}: expected one of {', '.join(SCORES)}")
    cls = CreditPolicy if pool == "credit" else RetentionPolicy
    return cls(config.window, config.budget, config.sinks, config.auto_topk, config.block_size)


def rows_of(resident: list[int], tokens: list[int]) -> Spans:
    """The rows of `tokens` (a sorted subset of `resident`) as Spans."""
    rows = Spans()
    for t in tokens:
        r = bisect_left(resident, t)
        rows.add(r, r + 1)
    return rows


@dataclass
class HeavyHitterPolicy(RetentionPolicy):
    """H2O-style retention: besides sinks, pins and the window, the rest of the budget holds
    the tokens that have received the most attention so far (summed over the steps, averaged
    over layers and heads). A baseline for `heedful bench retention`: no person involved.
    Needs the session's `collect_attention` on, and one-token prefill chunks to see every
    query's attention (the engine reports the last query of each chunk)."""

    def __post_init__(self):
        self.scores: dict[int, float] = {}

    def observe(self, resident: list[int], attention: dict) -> None:
        """Adds the newest query's attention (rows = `resident`) to each token's score."""
        layers = list(attention.values())
        if not layers or len(layers[0]) != len(resident):
            return
        mean = (sum(layers) / len(layers)).tolist()
        for t, w in zip(resident, mean):
            self.scores[t] = self.scores.get(t, 0.0) + w

    def keep_rows(self, resident: list[int], stream_len: int, n_new: int, pins: Spans, reserve: int = 0) -> Spans:
        keep = [t for t in resident if self.always(t, stream_len, n_new, pins)]  # a baseline: O(R) is fine
        room = self.budget - n_new - reserve - len(keep)
        if room > 0:
            kept = set(keep)
            rest = sorted((t for t in resident if t not in kept), key=lambda t: -self.scores.get(t, 0.0))
            keep = sorted(keep + rest[:room])
        for t in set(resident) - set(keep):
            self.scores.pop(t, None)
        return rows_of(resident, keep)


@dataclass
class CreditPolicy(RetentionPolicy):
    """Auto selection's pool kept by credit (see the module's docstring): sinks, pins and the
    window as RetentionPolicy; of the other resident rows, when more than the budget holds,
    the lowest-credit ones leave, never one of the newest `probation` (None: block_size).
    Credits come from `observe_selection`, which the encoder calls after each forward with
    the per-row pick counts the attention function collected (StepPlan.auto.hits). Credit is
    kept per token with one lazy decay factor (`_w`: a hit now weighs 1/decay**T of a hit at
    T = 0), so a step costs O(rows picked) to credit and O(pool) to choose what leaves."""

    decay: float = 0.98  # per token
    probation: int | None = None

    wants_hits = True  # the encoder asks the attention for pick counts

    def __post_init__(self):
        self.credit: dict = {}  # token (order key) -> credit * _w
        self._w = 1.0

    def credit_of(self, t) -> float:
        return self.credit.get(t, 0.0) / self._w

    def observe_selection(self, resident: list, n_new: int, pool_start: int = 0, rows=(), counts=()) -> None:
        """After a forward of the last n_new rows of `resident`: `rows` (ranks) were picked
        `counts` times (layers x KV heads). The new rows start with no credit (a token index
        that comes back after a rewind or a recall is a new row)."""
        self._w /= self.decay ** n_new
        for t in resident[len(resident) - n_new:]:
            self.credit.pop(t, None)
        w = self._w * n_new
        for r, c in zip(rows, counts):
            t = resident[pool_start + r]
            self.credit[t] = self.credit.get(t, 0.0) + c * w
        if self._w > 1e100 or len(self.credit) > 2 * len(resident) + 64:
            live = set(resident)
            self.credit = {t: v / self._w for t, v in self.credit.items() if t in live}
            self._w = 1.0

    def keep_rows(self, resident: list, stream_len: int, n_new: int, pins: Spans, reserve: int = 0) -> Spans:
        rows = self.always_rows(resident, stream_len, n_new, pins)
        if not self.auto_topk:
            return rows
        room = self.budget - n_new - reserve - rows.total()
        pool = [r for a, b in rows.complement(len(resident)) for r in range(a, b)]
        if room <= 0 or not pool:
            keep = []
        elif len(pool) <= room:
            keep = pool
        else:
            excess = len(pool) - room
            probation = self.block_size if self.probation is None else self.probation
            older = pool[: max(len(pool) - probation, 0)]
            if excess >= len(older):  # more must go than is out of probation: the oldest go
                gone = set(pool[:excess])
            else:
                credit = self.credit
                gone = set(heapq.nsmallest(excess, older, key=lambda r: (credit.get(resident[r], 0.0), r)))
            keep = [r for r in pool if r not in gone]
            for r in gone:
                self.credit.pop(resident[r], None)
        runs: list[tuple[int, int]] = []
        for r in keep:  # ascending
            if runs and runs[-1][1] == r:
                runs[-1] = (runs[-1][0], r + 1)
            else:
                runs.append((r, r + 1))
        return Spans(sorted([*rows, *runs]))  # disjoint, ascending: every add appends
