"""The resident rows, in order: each row's order key and what it is.

A row is one KV row per attention layer (cache.py). Its order key places it in the resident
order, which is the order of compacted positions: a token's row has the token's index; the
rows of a fold's gist have keys inside the folded span (fold.py), a summary row of automatic
fold the key just before its block's end (autofold.py), so a compacted position puts them
where their text stood. The kind is stored beside the key, so nothing tells rows apart by
the key's type.
"""

from __future__ import annotations

import enum
from bisect import bisect_left


class RowKind(enum.IntEnum):
    TOKEN = 0  # a stream token's own row
    GIST = 1  # a token of a fold's gist (fold.py)
    SUMMARY = 2  # a block summary of automatic fold (autofold.py)


class Rows:
    def __init__(self):
        self.keys: list = []  # ascending order keys (ints for tokens, fractions for the others)
        self.kinds: list[RowKind] = []

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, key) -> int:
        """The rank of the row with `key`, or where it would go."""
        return bisect_left(self.keys, key)

    def tokens(self) -> list[int]:
        """The token indices whose own rows are resident, ascending."""
        return [k for k, kind in zip(self.keys, self.kinds) if kind is RowKind.TOKEN]

    def token_ranks(self, ranks) -> list[int]:
        """Of the given ranks, those of token rows."""
        return [r for r in ranks if self.kinds[r] is RowKind.TOKEN]

    def extend(self, keys, kind: RowKind = RowKind.TOKEN) -> None:
        self.keys.extend(keys)
        self.kinds.extend([kind] * len(keys))

    def append(self, key, kind: RowKind) -> None:
        self.keys.append(key)
        self.kinds.append(kind)

    def insert(self, rank: int, key, kind: RowKind) -> None:
        self.keys.insert(rank, key)
        self.kinds.insert(rank, kind)

    def delete(self, a: int, b: int) -> None:
        del self.keys[a:b], self.kinds[a:b]

    def truncate(self, rank: int) -> None:
        self.delete(rank, len(self.keys))

    def items(self) -> list[tuple]:
        """(order key, kind) of every row, in order."""
        return list(zip(self.keys, self.kinds))
