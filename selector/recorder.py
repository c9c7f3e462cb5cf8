"""The recorder: how the engine reports every operation and token to a sink.

The engine calls a recorder; it never reads from one. The SQLite store (heedful.store)
implements this protocol; `MemoryRecorder` here keeps everything in lists for tests.

Order and meaning of the calls, as the Session makes them:

- ``event(op, args)`` is called *before* the operation takes effect, with targets already
  resolved to ranges (docs/DESIGN.md invariant 5). ``op``/``args`` have the replay-script shape:
  ``event("pin", {"range": [12, 16]})`` is the script line ``{"op": "pin", "range": [12, 16]}``.
  A recorder that persists must have the event durable when ``event`` returns (pins and
  config changes are committed before the engine acts on them). If ``event`` raises, the
  engine does not perform the operation.
  Ops the engine logs: config, prompt, say, generate, stop, set, pin, unpin, drop, recall,
  fold, unfold, rewind. Above the engine: resume (heedful.app, a stored session rebuilt) and
  the events no engine operation makes, accept and reject (store/tagging.py, a picker's
  suggestions judged in the app).
  While a ``generate`` is streaming, an operation made between two tokens carries
  ``"at": stream_length`` (the number of tokens in the stream when it took effect), so a
  replay can apply it at the same step; a ``generate`` cut short is followed by
  ``{"op": "stop", "at": stream_length}``.
- ``tokens(records)`` reports tokens appended to the stream, in index order, with no gap.
  It may buffer (the store batches writes); ``flush()`` forces them out.
- ``evicted(ranges, reason)`` reports token ranges whose KV rows were freed
  (reason: "window", a forward's rows leaving; "budget", a smaller budget set; "drop";
  "fold", the folded span's rows; "unfold", the gist's rows; "rewind", the rows past the
  rewind).
- ``reset_resident(tokens)`` after ``Session.restore``: the tokens the engine made resident
  (the rebuilt set replaces what the sink believed).
- ``close()`` flushes and releases the sink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class TokenRecord:
    index: int  # absolute token index in the session stream
    id: int  # vocabulary id
    text: str  # decoded text; concatenating all texts in order gives the stream's text
    source: str  # "prompt" | "generated" | "recalled"


@runtime_checkable
class Recorder(Protocol):
    def event(self, op: str, args: dict) -> None: ...

    def tokens(self, records: list[TokenRecord]) -> None: ...

    def evicted(self, ranges: list[tuple[int, int]], reason: str) -> None: ...

    def reset_resident(self, resident: list[int]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class MemoryRecorder:
    """Keeps everything in memory: the events, the tokens and the evictions."""

    events: list[dict] = field(default_factory=list)
    token_log: list[TokenRecord] = field(default_factory=list)
    evictions: list[tuple[tuple[int, int], str]] = field(default_factory=list)
    closed: bool = False

    def event(self, op: str, args: dict) -> None:
        self.events.append({"op": op, **args})

    def tokens(self, records: list[TokenRecord]) -> None:
        if self.token_log and records and records[0].index != self.token_log[-1].index + 1:
            # rewind cut the stream: drop what the rewind removed
            self.token_log = [t for t in self.token_log if t.index < records[0].index]
        self.token_log.extend(records)

    def evicted(self, ranges: list[tuple[int, int]], reason: str) -> None:
        self.evictions.extend((tuple(r), reason) for r in ranges)

    def reset_resident(self, resident: list[int]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class NullRecorder:
    """Records nothing (benchmarks)."""

    def event(self, op, args):
        pass

    def tokens(self, records):
        pass

    def evicted(self, ranges, reason):
        pass

    def reset_resident(self, resident):
        pass

    def flush(self):
        pass

    def release(self):
        pass

    def discard(self):
        pass

    def close(self):
        pass
