"""The store without a model: schema, recording, state, search, exports, bad databases."""

from __future__ import annotations

import io
import json
import sqlite3
import time

import pytest

from heedful.errors import HeedfulError
from heedful.selector.recorder import Recorder, TokenRecord
from heedful.store import Store
from heedful.store.export import export
from heedful.store.schema import VERSION
from tests.store.helpers import CONFIG, stream, words


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "t.db") as s:
        yield s


def test_schema_pragmas_and_protocol(store):
    c = store.conn
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert c.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert {"sessions", "tokens", "events", "evictions", "recalls", "chunks", "chunks_fts"} <= set(
        store.db.table_names())
    assert store.db["chunks"].detect_fts() == "chunks_fts"  # sqlite-utils / Datasette see the FTS
    rec = store.new_session()
    assert isinstance(rec, Recorder)
    rec.close()


def test_reopening_applies_no_migration_twice(tmp_path):
    Store.open(tmp_path / "t.db").close()
    with Store.open(tmp_path / "t.db") as s:
        assert s.conn.execute("SELECT version FROM heedful_schema").fetchall() == [(VERSION,)]


def test_events_are_durable_when_event_returns(store, tmp_path):
    rec = store.new_session(flush_tokens=10_000, flush_seconds=60)
    rec.event("config", CONFIG)
    rec.event("prompt", {"text": "hi"})
    rec.tokens(words(3, source="prompt"))
    rec.event("pin", {"range": [0, 2]})
    # another connection sees the pin and the tokens before it, nothing buffered is lost
    other = sqlite3.connect(tmp_path / "t.db")
    assert other.execute("SELECT op FROM events ORDER BY seq").fetchall() == [("config",), ("prompt",), ("pin",)]
    assert other.execute("SELECT count(*) FROM tokens").fetchone()[0] == 3
    rec.tokens(words(2, start=3))
    assert other.execute("SELECT count(*) FROM tokens").fetchone()[0] == 3  # buffered
    rec.close()
    assert other.execute("SELECT count(*) FROM tokens").fetchone()[0] == 5


def test_tokens_flush_by_count_and_by_time(store, tmp_path):
    other = sqlite3.connect(tmp_path / "t.db")
    count = lambda: other.execute("SELECT count(*) FROM tokens").fetchone()[0]  # noqa: E731
    rec = store.new_session(flush_tokens=16, flush_seconds=0.3)
    rec.event("config", CONFIG)
    for r in words(20):
        rec.tokens([r])
    assert count() == 16  # the 16th token triggered a write
    deadline = time.monotonic() + 3
    while count() < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count() == 20  # the flush thread wrote the rest while the stream paused
    rec.close()


def test_state_follows_pins_drops_recalls_and_rewinds(store):
    rec = store.new_session()
    rec.event("config", CONFIG)  # window 8
    rec.event("prompt", {"text": "x"})
    stream(rec, 30)
    rec.event("pin", {"range": [25, 27]})  # resident: pinned in place
    rec.event("recall", {"range": [3, 5], "append": True})  # evicted: re-encoded as new pinned tokens
    rec.tokens([TokenRecord(30, 1003, " w3", "recalled"), TokenRecord(31, 1004, " w4", "recalled")])
    rec.event("recall", {"range": [6, 8]})  # evicted: re-encoded in place, resident and pinned again
    rec.event("drop", {"range": [28, 29]})
    rec.evicted([(28, 29)], "drop")
    rec.event("unpin", {"range": [25, 26]})
    rec.close()
    st = store.session(rec.session_id).state
    assert list(st.pins) == [(6, 8), (26, 27), (30, 32)]
    assert not st.evicted.overlaps(6, 8) and st.evicted.overlaps(3, 5)
    assert list(st.dropped) == [(28, 29)]
    assert store.recalls(rec.session_id) == [(3, 5, 30, 32)]
    # rewind to 20: the window [12, 20) comes back (re-encoded), the rest is cut
    rec = store.reopen(rec.session_id)
    rec.event("rewind", {"index": 20})
    rec.evicted([(19, 20)], "rewind")
    rec.close()
    info = store.session(rec.session_id)
    assert info.tokens == 20 and list(info.state.pins) == [(6, 8)] and list(info.state.dropped) == []
    assert list(info.state.evicted) == [(0, 6), (8, 12)]
    assert [h.start for h in store.search("w25")] == []  # cut text is no longer found
    assert [(h.start, h.state) for h in store.search("w15")] == [(15, "retained")]


def test_search_finds_evicted_text_with_its_range(store):
    rec = store.new_session()
    rec.event("config", CONFIG)
    texts = ["The", " vault", " code", " is", " 48", "21", "."] + [f" filler{i}" for i in range(300)]
    rec.tokens([TokenRecord(i, i, t, "prompt") for i, t in enumerate(texts)])
    rec.evicted([(0, 290)], "window")
    rec.close()
    hits = store.search("VAULT code")
    assert [(h.start, h.end, h.text, h.state) for h in hits] == [(1, 3, " vault code", "evicted")]
    # chunks hold whole words, so a word split over two tokens is found, as its two tokens
    assert [(h.start, h.end, h.text) for h in store.search("4821")] == [(4, 6, " 4821")]
    # the last word may be the start of a word; failing that, the text is looked for inside words
    assert [(h.start, h.end) for h in store.search("48")] == [(4, 5)]
    assert [(h.start, h.end, h.text) for h in store.search("vault co")] == [(1, 3, " vault code")]
    assert [(h.start, h.end, h.text) for h in store.search("AULT")] == [(1, 2, " vault")]
    assert [(h.start, h.end) for h in store.search("821")] == [(4, 6)]
    assert store.search("vault codes") == [] and store.search("xyzzy") == []
    # every occurrence is a hit of its own: filler29 and filler290..299
    assert [h.start for h in store.search("filler29")] == [36] + list(range(297, 307))
    assert [h.start for h in store.search("filler29", limit=3)] == [36, 297, 298]
    assert [h.start for h in store.search(" filler29")] == [36] + list(range(297, 307))
    assert store.search('"quoted" AND OR (') == []  # any text is a valid query
    assert [(h.start, h.state) for h in store.search("filler299")] == [(306, "retained")]


UNUSUAL = ["plain", "\x00nul\x00", "ctl\x01\x1b[31m\x7f", "tab\tnew\nline\r\n", "emoji 🙂👩‍👩‍👧", "שלום עולם",
           "مرحبا", "\u202eRTL override", "e\u0301 combining", "`````fence", "\ufeffbom", '"quote" \\ back']


def test_unusual_text_stores_and_exports_unchanged(store):
    rec = store.new_session(title="\x00weird 🙂")
    rec.event("config", CONFIG)
    rec.event("prompt", {"text": "".join(UNUSUAL)})
    rec.tokens([TokenRecord(i, i, t, "prompt") for i, t in enumerate(UNUSUAL)])
    rec.event("pin", {"range": [0, len(UNUSUAL)]})
    rec.close()
    sid = rec.session_id
    data = store.load(sid)
    assert data.token_texts == UNUSUAL and store.session(sid).title == "\x00weird 🙂"
    assert store.events(sid)[1]["text"] == "".join(UNUSUAL)
    out = io.StringIO()
    export(store, sid, "all", "txt", out)
    assert out.getvalue() == "".join(UNUSUAL)
    out = io.StringIO()
    export(store, sid, "pinned", "jsonl", out)
    lines = [json.loads(ln) for ln in out.getvalue().split("\n") if ln]
    assert [d["text"] for d in lines] == UNUSUAL and [d["index"] for d in lines] == list(range(len(UNUSUAL)))
    out = io.StringIO()
    export(store, sid, "all", "md", out)
    assert "".join(UNUSUAL) in out.getvalue() and "``````text\n" in out.getvalue()
    assert [h.start for h in store.search("שלום")] == [5]


def test_exports_select_by_state(store):
    rec = store.new_session()
    rec.event("config", CONFIG)
    rec.event("prompt", {"text": "x"})
    stream(rec, 20)
    rec.event("pin", {"range": [14, 16]})
    rec.close()
    sid = rec.session_id

    def indices(what):
        out = io.StringIO()
        export(store, sid, what, "jsonl", out)
        return [json.loads(ln)["index"] for ln in out.getvalue().splitlines()]

    assert indices("pinned") == [14, 15]
    assert indices("retained") == list(range(12, 20))
    assert indices("all") == list(range(20))
    out = io.StringIO()
    export(store, sid, "retained", "txt", out)
    assert out.getvalue() == "\n[… 12 tokens …]\n" + "".join(f" w{i}" for i in range(12, 20))
    with pytest.raises(HeedfulError, match="JSON Lines"):
        export(store, sid, "events", "md", io.StringIO())
    with pytest.raises(HeedfulError, match="--session 99: no such session"):
        export(store, 99, "all", "txt", io.StringIO())


def test_not_sqlite_corrupt_and_newer_databases_are_refused(tmp_path):
    p = tmp_path / "text.db"
    p.write_text("hello, not a database\n")
    with pytest.raises(HeedfulError, match=r"text\.db: not an SQLite database"):
        Store.open(p)
    assert p.read_text() == "hello, not a database\n"

    good = tmp_path / "good.db"
    with Store.open(good) as s:
        rec = s.new_session()
        rec.event("config", CONFIG)
        rec.tokens(words(5000))
        rec.close()
        s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = bytearray(good.read_bytes())
    raw[100:] = bytes(len(raw) - 100)  # keep the header, wipe every page
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(bytes(raw))
    with pytest.raises(HeedfulError, match=r"corrupt\.db: .*(corrupt|not a heedful store)") as e:
        with Store.open(bad) as s:
            s.load(1)
    assert "\n" not in str(e.value)

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE foo (x)").connection.commit()
    with pytest.raises(HeedfulError, match="not a heedful store"):
        Store.open(other)

    newer = tmp_path / "newer.db"
    Store.open(newer).close()
    c = sqlite3.connect(newer)
    c.execute("INSERT INTO heedful_schema VALUES (?, 0)", (VERSION + 1,))
    c.commit()
    with pytest.raises(HeedfulError, match=f"newer heedful \\(schema version {VERSION + 1}"):
        Store.open(newer)

    with pytest.raises(HeedfulError, match="no such database"):
        Store.open(tmp_path / "missing.db", create=False)


def test_store_imports_neither_engine_nor_ui():
    import subprocess
    import sys

    code = ("import sys, heedful.store, heedful.store.export, heedful.store.search; "
            "bad = [m for m in sys.modules if m.startswith(('heedful.selector', 'heedful.tui', 'torch'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readers_share_the_connection_with_a_recording(store):
    """A UI reads (search, load) while the recorder and its flush thread write."""
    import threading

    rec = store.new_session(flush_tokens=7, flush_seconds=0.01)
    rec.event("config", CONFIG)
    errors, done = [], threading.Event()

    def read():
        try:
            while not done.is_set():
                for info in store.sessions():
                    store.load(info.id)
                store.search("w1")
        except Exception as e:  # pragma: no cover - the assertion shows it
            errors.append(e)

    t = threading.Thread(target=read)
    t.start()
    stream(rec, 3000)
    done.set()
    t.join()
    rec.close()
    assert errors == [] and store.load(rec.session_id).token_ids == [1000 + i for i in range(3000)]
