"""H2O (Zhang et al., 2023, "heavy hitters"), the retention benchmark's attention-score
baseline: a retention policy of its own, given to the Session (`Session(..., policy=...)`),
that learns from the attention the engine collects for it (RetentionPolicy.observe)."""

from __future__ import annotations

from dataclasses import dataclass

from heedful.selector.policy import RetentionPolicy, rows_of
from heedful.spans import Spans


@dataclass
class HeavyHitterPolicy(RetentionPolicy):
    """H2O-style retention: besides sinks, pins and the window, the rest of the budget holds
    the tokens that have received the most attention so far (summed over the steps, averaged
    over layers and heads). A baseline for `heedful bench retention`: no person involved.
    Needs one-token prefill chunks to see every query's attention (the engine reports the
    last query of each chunk)."""

    wants_attention = True

    def __post_init__(self):
        self.scores: dict[int, float] = {}

    def observe(self, resident: list, attention: dict) -> None:
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
