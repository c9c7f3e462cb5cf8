"""Sorted, disjoint half-open integer spans [start, end): pins and drops over token indices."""

from __future__ import annotations

import bisect


class Spans:
    def __init__(self, spans=()):
        self._s: list[tuple[int, int]] = []
        for a, b in spans:
            self.add(a, b)

    def add(self, a: int, b: int) -> None:
        if a >= b:
            return
        out, placed = [], False
        for s, e in self._s:
            if e < a or s > b:  # disjoint and not touching
                if s > b and not placed:
                    out.append((a, b))
                    placed = True
                out.append((s, e))
            else:
                a, b = min(a, s), max(b, e)
        if not placed:
            out.append((a, b))
        self._s = sorted(out)

    def remove(self, a: int, b: int) -> None:
        out = []
        for s, e in self._s:
            if e <= a or s >= b:
                out.append((s, e))
                continue
            if s < a:
                out.append((s, a))
            if e > b:
                out.append((b, e))
        self._s = out

    def clip(self, end: int) -> None:
        """Removes everything at or past `end`."""
        self.remove(end, max(end, self._s[-1][1]) if self._s else end)

    def __contains__(self, i: int) -> bool:
        k = bisect.bisect_right(self._s, (i, float("inf"))) - 1
        return k >= 0 and self._s[k][0] <= i < self._s[k][1]

    def count_in(self, a: int, b: int) -> int:
        return sum(max(0, min(e, b) - max(s, a)) for s, e in self._s)

    def total(self) -> int:
        return sum(e - s for s, e in self._s)

    def union_count(self, other_first: int) -> int:
        """|self ∪ [0, other_first)|: pins plus sinks, counted once."""
        return other_first + sum(max(0, e - max(s, other_first)) for s, e in self._s)

    def __iter__(self):
        return iter(list(self._s))

    def __len__(self):
        return len(self._s)

    def __eq__(self, other):
        return isinstance(other, Spans) and self._s == other._s

    def copy(self) -> "Spans":
        c = Spans()
        c._s = list(self._s)
        return c

    def __repr__(self):
        return f"Spans({self._s})"
