"""Sorted, disjoint half-open spans [start, end) of token indices: pins, drops, evictions.

One structure for the engine (heedful.selector) and the store (heedful.store), which may
not import each other. Appending at or after the last span is the common case (the window
slides one token at a time), so `add` takes a fast path there.
"""

from __future__ import annotations

import bisect


class Spans:
    __slots__ = ("_s",)

    def __init__(self, spans=()):
        self._s: list[tuple[int, int]] = []
        for a, b in spans:
            self.add(a, b)

    def add(self, a: int, b: int) -> None:
        if a >= b:
            return
        s = self._s
        if not s or a > s[-1][1]:
            s.append((a, b))
            return
        if a >= s[-1][0]:  # touches or overlaps the last span
            s[-1] = (s[-1][0], max(b, s[-1][1]))
            return
        lo = bisect.bisect_left(s, (a, a))
        if lo and s[lo - 1][1] >= a:
            lo -= 1
        hi = lo
        while hi < len(s) and s[hi][0] <= b:
            a, b = min(a, s[hi][0]), max(b, s[hi][1])
            hi += 1
        s[lo:hi] = [(a, b)]

    def remove(self, a: int, b: int) -> None:
        if a >= b:
            return
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
        if self._s:
            self.remove(end, max(end, self._s[-1][1]))

    def overlaps(self, a: int, b: int) -> bool:
        k = bisect.bisect_left(self._s, (b, b)) - 1  # last span starting before b
        return k >= 0 and self._s[k][1] > a

    def __contains__(self, i: int) -> bool:
        return self.overlaps(i, i + 1)

    def total(self) -> int:
        return sum(e - s for s, e in self._s)

    def complement(self, n: int) -> "Spans":
        """[0, n) minus these spans."""
        out, at = Spans(), 0
        for s, e in self._s:
            if s >= n:
                break
            if s > at:
                out._s.append((at, s))
            at = max(at, e)
        if at < n:
            out._s.append((at, n))
        return out

    def to_list(self) -> list[list[int]]:
        return [[a, b] for a, b in self._s]

    def union_count(self, first: int) -> int:
        """|self ∪ [0, first)|: pins plus sinks, counted once."""
        return first + sum(max(0, e - max(s, first)) for s, e in self._s)

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


def runs(indices) -> list[tuple[int, int]]:
    """Sorted indices -> their maximal [start, end) runs."""
    out: list[tuple[int, int]] = []
    for t in indices:
        if out and out[-1][1] == t:
            out[-1] = (out[-1][0], t + 1)
        else:
            out.append((t, t + 1))
    return out
