"""What the store touches: a refused database stays as it was, reading is read-only, and a
hand-edited database is a one-line error that names the database, the session and the fault."""

from __future__ import annotations

import io
import sqlite3

import pytest

from heedful.errors import HeedfulError
from heedful.store import Store
from heedful.store.export import export
from tests.store.helpers import CONFIG, snapshot, stream


def _make(db, n: int = 20) -> None:
    with Store.open(db) as s:
        rec = s.new_session(title="t")
        rec.event("config", CONFIG)
        rec.event("prompt", {"text": "w"})
        stream(rec, n)
        rec.event("pin", {"range": [12, 14]})
        rec.close()


def _read_everything(store) -> None:
    for info in store.sessions():
        store.load(info.id)
        store.events(info.id)
        export(store, info.id, "all", "jsonl", io.StringIO())
    store.search("w1")


def test_a_refused_database_is_left_untouched(tmp_path):
    other = tmp_path / "other.db"
    c = sqlite3.connect(other)
    c.execute("CREATE TABLE foo (x)")
    c.commit()
    c.close()
    before = snapshot(tmp_path)
    with pytest.raises(HeedfulError, match="not a heedful store"):
        Store.open(other)
    assert snapshot(tmp_path) == before  # same bytes, same mtime, no -wal or -shm beside it
    c = sqlite3.connect(f"file:{other}?mode=ro", uri=True)
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    c.close()
