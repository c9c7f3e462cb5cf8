"""Where each resident row lives and at which rotary position its key sits: the integer
bookkeeping of the KV cache, one instance per session, shared by every attention layer.

Rows never move. A row is written once into a slot of each layer's fixed-capacity buffer and
stays there until its token leaves; a freed slot goes back to the free list and the next row
takes the lowest free one, so the occupied slots stay packed at the front of the buffer and
attention reads a prefix of it (`hi` slots, holes masked).

Positions. A row's compacted position is its rank among the resident rows (docs/DESIGN.md).
RoPE scores depend only on the difference between the query's and the key's positions, so
the engine may add one constant, `shift`, to all of them. Keys are kept as the model rotated
them, at `pos[r]`; at every forward all rows sit at pos = rank + shift, the shift chosen so
that the newest rows keep their rotation. A row that leaves costs the rows after it one rank
each, and those keep their rotation (their shift grew by one with everybody else's); only
the rows before it - at a decode step the sinks, pins and gists, never the window - are
re-rotated, at the next forward. A step thus rotates the fixed rows, not all resident ones.

`d[r] = pos[r] - r` never decreases along the ranks (every operation below keeps that), so
the rows out of line are two runs found by bisection: O(log R) to find, O(fixed) to redo.
Positions grow by one a step; before they would pass `ceiling` (at most the model's
max_position_embeddings: a scaled RoPE may switch behaviour past it) every row is re-based to
pos = rank.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from dataclasses import dataclass


class CapacityError(RuntimeError):
    """More rows than the bank holds: the engine's own checks should prevent it; a resume
    under settings its stored session cannot fit reports it as a BudgetError."""


@dataclass
class Alignment:
    """What a forward of n rows needs: the rows to re-rotate (ranks, new positions), and the
    positions the new rows get."""

    shift: int
    ranks: list[int]
    positions: list[int]
    new_positions: list[int]


class Slots:
    def __init__(self, capacity: int, max_positions: int | None = None):
        self.capacity = capacity
        # Positions stay below the model's context length, and small enough that fp32 angles
        # stay exact to ~1e-4 rad; a re-base (all rows re-rotated) every ~ceiling - R steps
        self.ceiling = max(2 * capacity, 4096)
        if max_positions is not None:
            self.ceiling = max(capacity, min(self.ceiling, max_positions))
        self.reset()

    def reset(self) -> None:
        self.slots: list[int] = []  # slot of each resident row, by rank
        self.pos: list[int] = []  # rotary position its key sits at, by rank
        self._free = list(range(self.capacity))  # a heap: the lowest free slot first
        self.hi = 0  # no occupied slot at or above it
        # slots whose position-free key (the layers' `masters`) is up to date: a row gets one
        # the first time it is re-rotated, so every later rotation starts from it (one
        # rounding, never an accumulation of them)
        self.mastered = bytearray(self.capacity)
        # bumped when a slot is freed: (slot, generation) names one row for good, so a copy
        # of some rows' masters can tell whether it is still theirs
        self.generation = [0] * self.capacity

    def __len__(self) -> int:
        return len(self.slots)

    # ------------------------------------------------------------------ slots
    def alloc(self, n: int) -> list[int]:
        if len(self.slots) + n > self.capacity:
            raise CapacityError(f"KV budget exceeded: {len(self.slots)} resident + {n} new rows > capacity "
                                f"{self.capacity}")
        out = [heapq.heappop(self._free) for _ in range(n)]
        if out:
            self.hi = max(self.hi, max(out) + 1)
        return out

    def release(self, slots: list[int]) -> None:
        for s in slots:
            heapq.heappush(self._free, s)
            self.mastered[s] = 0
            self.generation[s] += 1

    def exact_hi(self, extra: list[int] = ()) -> int:
        """`hi` made exact (it is an upper bound after rows leave): cheap when no hole."""
        n = len(self.slots) + len(extra)
        if self.hi > n:
            self.hi = max(max(self.slots, default=-1), max(extra, default=-1)) + 1
        return self.hi

    # ------------------------------------------------------------------ ranks
    def keep(self, runs: list[tuple[int, int]]) -> int | None:
        """Keeps the rows of the ascending, disjoint [a, b) rank runs; returns the first rank
        that changed (None: nothing left). Slices only: this runs before every forward."""
        at, first, gone = 0, None, []
        for a, b in runs:
            if a != at:
                first = at if first is None else first
                gone += self.slots[at:a]
            at = b
        if at != len(self.slots):
            first = at if first is None else first
            gone += self.slots[at:]
        if first is None:
            return None
        kept_s, kept_p = [], []
        for a, b in runs:
            kept_s += self.slots[a:b]
            kept_p += self.pos[a:b]
        self.slots, self.pos = kept_s, kept_p
        self.release(gone)
        return first

    def truncate(self, n: int) -> list[int]:
        """Ranks from n on leave; returns their slots."""
        gone = self.slots[n:]
        del self.slots[n:], self.pos[n:]
        self.release(gone)
        return gone

    def next_position(self) -> int:
        """The position a row appended now gets (right after the newest)."""
        return self.pos[-1] + 1 if self.pos else 0

    def append(self, slots: list[int], positions: list[int]) -> None:
        self.slots += slots
        self.pos += positions

    def insert(self, rank: int, slot: int) -> tuple[list[int], list[int], int]:
        """Makes room for a row at `rank`: returns the ranks after it (which must be re-rotated
        one position on, to keep their distance to the query), their new positions, and the
        position of the inserted row. The row itself is placed by `place`."""
        after = list(range(rank, len(self.slots)))
        new = [self.pos[r] + 1 for r in after]
        at = self.pos[rank] if rank < len(self.pos) else self.next_position()
        self.slots.insert(rank, slot)
        self.pos.insert(rank, at)
        return [r + 1 for r in after], new, at

    def set_positions(self, ranks: list[int], positions: list[int]) -> None:
        for r, p in zip(ranks, positions):
            self.pos[r] = p

    # ------------------------------------------------------------------ a forward
    def align(self, n: int) -> Alignment:
        """Before a forward of n rows: the rows out of line with the newest and the positions
        the new rows get, re-basing to pos = rank when they would reach the ceiling."""
        r_count = len(self.slots)
        shift = self.pos[-1] - (r_count - 1) if r_count else 0
        if r_count + n - 1 + shift >= self.ceiling:
            shift = 0
        pos = self.pos

        def d(r: int) -> int:
            return pos[r] - r

        lo = bisect_left(range(r_count), shift, key=d)
        hi = bisect_right(range(r_count), shift, key=d)
        ranks = [*range(lo), *range(hi, r_count)]
        return Alignment(shift, ranks, [r + shift for r in ranks],
                         list(range(r_count + shift, r_count + shift + n)))
