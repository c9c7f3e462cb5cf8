"""Who made an operation, and events the engine does not make: a recorder in front of a
session's recorder.

The engine logs every operation as `recorder.event(op, args)` and does not know who asked
for it. `tagging(session)` puts a `TaggingRecorder` in front of the session's recorder
(once; `session.recorder` is the front from then on, everything else passes through), so
that

- `with rec.tagged(by="picker"): session.pin(...)` logs that pin as
  `{"op": "pin", "range": [a, b], "by": "picker"}`: the fields are added to the events of the
  operations made *on this thread* while the block runs (a UI thread's pins made meanwhile
  stay untagged);
- `rec.note(op, args, streaming=...)` logs an event that is no operation of the engine (a
  suggestion accepted or rejected), with `"at"` (the stream's length, as the engine's own
  events carry it) when a generate is streaming: taken under the same lock as the tokens
  and events passing through, so the "at" of the log never goes back.

Nothing here imports the engine: the session is anything with a `recorder` attribute.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager


class TaggingRecorder:
    def __init__(self, inner, tokens: int = 0):
        self.inner = inner
        self._lock = threading.RLock()
        self._local = threading.local()
        self._tokens = tokens  # the stream's length as reported: the "at" of a note

    # ---------------------------------------------------------------- the Recorder protocol
    def event(self, op: str, args: dict) -> None:
        tags = getattr(self._local, "tags", None)
        with self._lock:
            if tags and op != "stop":
                args = {**args, **tags}
            if op == "rewind":
                self._tokens = min(self._tokens, int(args["index"]))
            elif op == "resume":
                self._tokens = int(args["tokens"])
            self.inner.event(op, args)

    def tokens(self, records) -> None:
        with self._lock:
            self.inner.tokens(records)
            if records:
                self._tokens = records[-1].index + 1

    def evicted(self, ranges, reason: str) -> None:
        self.inner.evicted(ranges, reason)

    def reset_resident(self, resident) -> None:
        self.inner.reset_resident(resident)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name):  # session_id, commit, ... of the recorder behind
        return getattr(self.inner, name)

    # ---------------------------------------------------------------- tags and notes
    @contextmanager
    def tagged(self, **fields):
        """Adds `fields` to the events of the operations this thread makes in the block."""
        before = getattr(self._local, "tags", None)
        self._local.tags = {**(before or {}), **fields}
        try:
            yield self
        finally:
            self._local.tags = before

    def note(self, op: str, args: dict, streaming: bool = False) -> None:
        """Logs an event no engine operation makes; with "at" while a generate streams."""
        with self._lock:
            self.inner.event(op, {**args, "at": self._tokens} if streaming else dict(args))


def tagging(session) -> TaggingRecorder:
    """The session's TaggingRecorder, put in front of its recorder on the first call."""
    rec = session.recorder
    if not isinstance(rec, TaggingRecorder):
        rec = TaggingRecorder(rec, tokens=len(session.token_ids))
        session.recorder = rec
    return rec
