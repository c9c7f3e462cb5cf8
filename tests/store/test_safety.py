"""What the store touches: a refused database stays as it was, reading is read-only, and a
hand-edited database is a one-line error that names the database, the session and the fault."""

from __future__ import annotations

import io
import os
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
    for readonly in (False, True):
        with pytest.raises(HeedfulError, match="not a heedful store"):
            Store.open(other, readonly=readonly)
        assert snapshot(tmp_path) == before  # same bytes, same mtime, no -wal or -shm beside it
    c = sqlite3.connect(f"file:{other}?mode=ro", uri=True)
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    c.close()


def test_reading_read_only_switches_nothing_and_writes_nothing(tmp_path):
    db = tmp_path / "t.db"
    _make(db)
    before = snapshot(tmp_path)
    with Store.open(db, readonly=True) as s:  # WAL, in a writable folder
        _read_everything(s)
    assert snapshot(tmp_path) == before  # the -wal and -shm SQLite made are gone again
    c = sqlite3.connect(db)
    assert c.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    c.close()
    before = snapshot(tmp_path)
    with Store.open(db, readonly=True) as s:
        _read_everything(s)
        assert s.load(1).token_ids == [1000 + i for i in range(20)]
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        with pytest.raises(HeedfulError, match=r"t\.db: opened read-only"):
            s.new_session()
        with pytest.raises(HeedfulError, match=r"t\.db: the database is read-only"), s.guard():
            s.conn.execute("INSERT INTO heedful_schema VALUES (99, 0)")  # SQLite refuses it too
    assert snapshot(tmp_path) == before

    for create, readonly in ((False, False), (False, True), (True, True)):  # create=False: resuming
        with pytest.raises(HeedfulError, match=r"missing\.db: no such database"):
            Store.open(tmp_path / "sub" / "missing.db", create=create, readonly=readonly)
        assert not (tmp_path / "sub").exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    before = snapshot(tmp_path)
    with pytest.raises(HeedfulError, match=r"empty\.db: .*not yet a heedful store"):
        Store.open(empty, readonly=True)
    assert snapshot(tmp_path) == before


def test_a_wal_database_is_read_read_only_where_its_folder_is_not_writable(tmp_path, monkeypatch):
    """No -wal/-shm can be made beside it: SQLite opens it immutable (simulated here through
    os.access; tests/cli runs the real thing where chmod stops writes)."""
    db = tmp_path / "t.db"
    _make(db)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **k: not (m & os.W_OK and os.path.isdir(p)) and real(p, m, **k))
    before = snapshot(tmp_path)
    with Store.open(db, readonly=True) as s:
        _read_everything(s)
        assert "immutable=1" in s.uri
    assert snapshot(tmp_path) == before
    with pytest.raises(HeedfulError, match=r"t\.db: the folder .* is not writable"):
        Store.open(db)
    with pytest.raises(HeedfulError, match=r"new\.db: the folder .* is not writable"):
        Store.open(tmp_path / "new.db")
    assert snapshot(tmp_path) == before


RETYPED = "DROP TABLE heedful_schema; CREATE TABLE heedful_schema (version, applied); "
# (name, SQL run on a good database, what the message says)
EDITS = [
    ("schema-text", RETYPED + "INSERT INTO heedful_schema VALUES ('one', 0)", "heedful_schema holds version 'one'"),
    ("schema-real", RETYPED + "INSERT INTO heedful_schema VALUES (1.5, 0)", "heedful_schema holds version 1.5"),
    ("schema-null", RETYPED + "INSERT INTO heedful_schema VALUES (NULL, 0)", "heedful_schema holds version None"),
    ("schema-negative", "UPDATE heedful_schema SET version = -3", "heedful_schema holds version -3"),
    ("table-dropped", "DROP TABLE recalls", "table recalls is missing"),
    ("state-not-json", "UPDATE sessions SET state = '{pins'", "session 1: column state is not JSON"),
    ("state-a-list", "UPDATE sessions SET state = '[1, 2]'", "session 1: column state"),
    ("state-bad-pins", "UPDATE sessions SET state = '{\"pins\": 7}'", "session 1: column state"),
    ("state-bad-span", "UPDATE sessions SET state = '{\"pins\": [[\"a\", 3]]}'", "session 1: column state"),
    ("config-not-json", "UPDATE sessions SET config = 'x'", "session 1: column config is not JSON"),
    ("config-a-number", "UPDATE sessions SET config = '3'", "session 1: column config"),
    ("created-text", "UPDATE sessions SET created = 'yesterday'", "session 1: column created"),
    ("event-args", "UPDATE events SET args = 'nope' WHERE seq = 1", "session 1: event 1: column args is not JSON"),
    ("event-args-list", "UPDATE events SET args = '[1]' WHERE seq = 1", "session 1: event 1: column args"),
    ("event-op", "UPDATE events SET op = x'01' WHERE seq = 1", "session 1: event 1: column op"),
    ("token-gap", "DELETE FROM tokens WHERE idx BETWEEN 5 AND 7", "session 1: tokens [5, 8) are missing"),
    ("token-first", "DELETE FROM tokens WHERE idx = 0", "session 1: tokens [0, 1) are missing"),
    ("token-id", "UPDATE tokens SET token_id = 'x' WHERE idx = 3", "session 1: token 3: token_id"),
    ("token-blob", "UPDATE tokens SET text = x'00ff' WHERE idx = 3", "session 1: token 3: text"),
    ("token-source", "UPDATE tokens SET source = 'bogus' WHERE idx = 3", "session 1: token 3: source"),
]


@pytest.mark.parametrize("name,sql,says", EDITS, ids=[e[0] for e in EDITS])
@pytest.mark.parametrize("readonly", [False, True], ids=["rw", "ro"])
def test_hand_edited_databases_are_one_line_errors(tmp_path, name, sql, says, readonly):
    db = tmp_path / "t.db"
    _make(db)
    c = sqlite3.connect(db)
    c.executescript(sql)
    c.close()
    with pytest.raises(HeedfulError) as e:
        with Store.open(db, readonly=readonly) as s:
            _read_everything(s)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{db}: ") and says in msg, msg
