"""The recorder in front of a session's recorder (store/tagging.py): fields added to the
events of one thread only, notes with "at" that never goes back, everything else passed
through."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from heedful.selector.recorder import MemoryRecorder, TokenRecord
from heedful.store.tagging import TaggingRecorder, tagging


def _records(a: int, b: int) -> list[TokenRecord]:
    return [TokenRecord(i, i, "x", "generated") for i in range(a, b)]


def test_tags_go_to_the_events_of_the_thread_that_set_them():
    inner = MemoryRecorder()
    session = SimpleNamespace(recorder=inner, token_ids=[1, 2, 3])
    rec = tagging(session)
    assert session.recorder is rec and tagging(session) is rec and rec.inner is inner  # put in front once
    inside, other = threading.Event(), threading.Event()

    def person():
        inside.wait()
        rec.event("pin", {"range": [0, 1]})  # while the picker's block runs on the other thread
        other.set()

    t = threading.Thread(target=person)
    t.start()
    with rec.tagged(by="picker"):
        rec.event("pin", {"range": [1, 2], "at": 3})
        inside.set()
        other.wait()
        rec.event("stop", {"at": 3})  # a stream cut short is nobody's choice
    t.join()
    rec.event("unpin", {"range": [1, 2]})
    assert inner.events == [{"op": "pin", "range": [1, 2], "at": 3, "by": "picker"},
                            {"op": "pin", "range": [0, 1]}, {"op": "stop", "at": 3},
                            {"op": "unpin", "range": [1, 2]}]
    rec.close()
    assert inner.closed and rec.closed  # everything else passes through


def test_a_notes_at_follows_the_stream_and_never_goes_back():
    inner = MemoryRecorder()
    rec = TaggingRecorder(inner, tokens=5)
    rec.note("reject", {"range": [1, 2]}, streaming=True)
    rec.tokens(_records(5, 9))
    rec.note("accept", {"range": [6, 8], "score": 0.5}, streaming=True)
    rec.note("accept", {"range": [6, 8]})  # not streaming: no "at"
    rec.event("rewind", {"index": 7})
    rec.note("reject", {"range": [2, 3]}, streaming=True)
    rec.tokens(_records(7, 8))
    rec.event("resume", {"tokens": 4, "config": {}})
    rec.note("reject", {"range": [2, 3]}, streaming=True)
    assert [e.get("at") for e in inner.events if e["op"] in ("accept", "reject")] == [5, 9, None, 7, 4]
    assert [t.index for t in inner.token_log] == [5, 6, 7]


def test_notes_and_the_engines_events_keep_at_in_order_across_threads():
    """A stream's tokens and events on one thread, notes on another: in the log the "at" of
    each event is at least the one before (what a replay script needs)."""
    inner = MemoryRecorder()
    rec = TaggingRecorder(inner)
    stop, noted = threading.Event(), threading.Event()

    def stream():
        noted.wait()
        for i in range(400):
            rec.tokens(_records(i, i + 1))
            rec.event("pin", {"range": [i, i + 1], "at": i + 1})
            time.sleep(0)
        stop.set()

    t = threading.Thread(target=stream)
    t.start()
    while not stop.is_set():
        rec.note("reject", {"range": [0, 1]}, streaming=True)
        noted.set()
    t.join()
    ats = [e["at"] for e in inner.events]
    assert ats == sorted(ats)
    assert len({e["at"] for e in inner.events if e["op"] == "reject"}) > 10  # notes all along the stream
