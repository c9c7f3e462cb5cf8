"""Drives a SessionRecorder the way the engine does, without a model."""

from __future__ import annotations

from heedful.selector.recorder import TokenRecord

CONFIG = {"model": "tiny", "window": 8, "budget": 32, "sinks": 0, "seed": 0}


def words(n: int, start: int = 0, source: str = "generated") -> list[TokenRecord]:
    return [TokenRecord(i, 1000 + i, f" w{i}", source) for i in range(start, start + n)]


def stream(rec, n: int, window: int = 8, source: str = "generated") -> None:
    """Appends n tokens one by one, evicting the token that leaves the window each step."""
    start = rec.state.tokens
    for i in range(start, start + n):
        if i - window >= 0 and i - window not in rec.state.pins and i - window not in rec.state.evicted:
            rec.evicted([(i - window, i - window + 1)], "window")
        rec.tokens([TokenRecord(i, 1000 + i, f" w{i}", source)])
