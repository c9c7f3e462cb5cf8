"""The retention policy: which resident tokens keep their KV rows before each forward.

Before a chunk of L new tokens is processed, the resident set is cut to

    sinks (the first S tokens)  ∪  pins  ∪  the last (W - L) tokens before the chunk

so that each new token attends the sinks, the pins and a window of W tokens that ends with
itself (for a decode step, L = 1: the W - 1 previous tokens and itself). With auto
selection on, the rest of the budget holds a candidate pool of the most recent tokens
before the window, from which the top-k blocks are picked per step and per KV head. It
gives up its oldest tokens one at a time, so the budget stays full. (Evicting a whole block
at once would let the block summaries be redone once per block_size steps instead of at
every step, but measured on `bench retention` it cost recall: facts at the pool's old edge
went a few steps early, 0.33 -> 0.10 at B = 96.)

A token that leaves the resident set never returns by itself: only `recall` (re-encoding)
brings its text back, as new tokens. Dropped tokens leave at once.

The budget B bounds resident rows during a forward, chunk included. The guarantee
|sinks ∪ pins| + W <= B is checked when pins are added (a pin that would break it is
refused), so the cut above always leaves room for the chunk.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

from heedful.errors import BudgetError
from heedful.spans import Spans


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
