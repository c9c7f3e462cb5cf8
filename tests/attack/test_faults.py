"""A fault injector for the store: a write that fails at any point (a full disk, an I/O
error, the file turning read-only mid-run), and kill -9 at random points of a stream
(slow). After each: the database passes `pragma integrity_check`, everything committed
before the fault is there, and nothing half-written is: tokens 0..n-1 with no gap, no
event whose tokens are missing; one writer per session."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from heedful.errors import HeedfulError
from heedful.selector.recorder import TokenRecord
from heedful.store import Store
from heedful.store.db import StoreFault

CONFIG = {"model": "fault", "window": 8, "sinks": 0}


class Failing:
    """store.conn, failing its k-th execute (or executemany) with `error`."""

    def __init__(self, conn, k: int, error: Exception):
        self._conn, self._k, self._error, self.calls = conn, k, error, 0

    def _count(self, sql):
        self.calls += 1
        if self.calls == self._k and not sql.startswith(("ROLLBACK", "SELECT")):
            raise self._error

    def execute(self, sql, *args):
        self._count(sql)
        return self._conn.execute(sql, *args)

    def executemany(self, sql, *args):
        self._count(sql)
        return self._conn.executemany(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def consistent(db) -> tuple[int, int]:
    """Integrity, and a stream with no gap whose events all lie within it: (tokens, events)."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT id, tokens FROM sessions").fetchall()
        if not rows:
            return 0, 0
        (sid, stored), = rows
        idx = [i for (i,) in conn.execute("SELECT idx FROM tokens WHERE session = ? ORDER BY idx", (sid,))]
        assert idx == list(range(len(idx))), "a gap in the stream"
        assert stored == len(idx), "the sessions row disagrees with the tokens"
        ats = [a for (a,) in conn.execute("SELECT tokens FROM events WHERE session = ?", (sid,))]
        assert all(a <= len(idx) for a in ats), "an event whose tokens are not stored"
        chunks = conn.execute("SELECT max(end_idx) FROM chunks WHERE session = ?", (sid,)).fetchone()[0]
        assert chunks is None or chunks <= len(idx), "a search chunk past the stored tokens"
        return len(idx), len(ats)
    finally:
        conn.close()


def _record(store, n: int, committed: list):
    """Records n tokens in small transactions; `committed` gets (tokens, events) on disk
    after each call that returned (what the recorder no longer holds pending)."""
    rec = store.new_session(title="fault", flush_tokens=7, flush_seconds=3600)

    def done():
        committed.append((rec.state.tokens - len(rec._rows), rec._seq - len(rec._events)))

    rec.event("config", CONFIG)
    done()
    for i in range(n):
        rec.tokens([TokenRecord(i, i, f" w{i}", "generated")])
        done()
        if i % 11 == 10:
            rec.event("pin", {"range": [i - 1, i + 1]})
            done()
    rec.close()
    done()


ERRORS = {
    "disk-full": sqlite3.OperationalError("database or disk is full"),
    "io-error": sqlite3.OperationalError("disk I/O error"),
    "read-only": sqlite3.OperationalError("attempt to write a readonly database"),
}


@pytest.mark.parametrize("kind", list(ERRORS))
@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 13, 21, 34, 55])
def test_a_write_failing_at_any_point_loses_nothing_committed(tmp_path, kind, k):
    db = tmp_path / "f.db"
    store = Store.open(db)
    store.conn = Failing(store.conn, k, ERRORS[kind])
    committed: list = []
    with pytest.raises(HeedfulError) as e:
        _record(store, 60, committed)
    assert "\n" not in str(e.value) and str(db) in str(e.value)
    # a full or failing disk is a fault (exit 1), a read-only file bad input (exit 2)
    assert e.value.exit_code == (2 if kind == "read-only" else 1)
    assert isinstance(e.value, StoreFault) == (kind != "read-only")
    store.conn = store.conn._conn
    store.close()
    tokens, events = consistent(db)
    last = committed[-1] if committed else (0, 0)
    assert (tokens, events) == last


@pytest.mark.parametrize("pages", [3, 6, 12, 24])
def test_a_real_full_disk_mid_stream_leaves_a_clean_prefix(tmp_path, pages):
    """SQLite's own SQLITE_FULL: the file may grow `pages` pages past its start."""
    db = tmp_path / "full.db"
    store = Store.open(db)
    count = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count = {count + pages}")
    committed: list = []
    with pytest.raises(StoreFault, match="full"):
        _record(store, 5000, committed)
    store.close()
    assert consistent(db) == committed[-1]


def test_the_file_turning_read_only_mid_run_is_one_line_and_keeps_the_prefix(tmp_path):
    db = tmp_path / "ro.db"
    store = Store.open(db)
    rec = store.new_session(title="ro", flush_tokens=4, flush_seconds=3600)
    rec.event("config", CONFIG)
    rec.tokens([TokenRecord(i, i, f" w{i}", "generated") for i in range(8)])
    store.conn.execute("PRAGMA query_only = ON")  # what a read-only file looks like to SQLite
    with pytest.raises(HeedfulError, match="read-only|readonly") as e:
        rec.tokens([TokenRecord(i, i, f" w{i}", "generated") for i in range(8, 16)])
    assert "\n" not in str(e.value)
    store.conn.execute("PRAGMA query_only = OFF")
    rec.discard()
    rec.close()
    store.close()
    assert consistent(db) == (8, 1)


# ---------------------------------------------------------------- one writer per session
HOLD = ("import sys, time; from heedful.store.writers import claim; "
        "c = claim(sys.argv[1], 1); print('held', flush=True); time.sleep(60)")


def test_a_second_writer_of_a_session_is_refused_in_one_line(cli, paths):
    """Another process holds session 1: a resume and a recall are refused, nothing changes."""
    from tests.attack.harness import db_state, one_line

    child = subprocess.Popen([sys.executable, "-c", HOLD, paths["db"]], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        before = db_state(paths["db"])
        for args in (["generate", "--db", paths["db"], "--session", "1", "-n", "2", "--model", paths["model"]],
                     ["recall", "vault", "--db", paths["db"], "--model", paths["model"]]):
            code, _, err = cli(*args)
            assert code == 2
            one_line(err, 2, r"session 1 is being written by another process")
        assert db_state(paths["db"]) == before
    finally:
        child.kill()
        child.wait()
    code, _, err = cli("generate", "--db", paths["db"], "--session", "1", "-n", "2", "--model", paths["model"])
    assert code == 0, err  # the claim ended with its process (killed)


def _heedful(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "heedful", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_two_processes_continuing_one_session_half_a_second_apart(paths):
    """The reported defect: the second resumed from the first's half-written stream, then
    died on a UNIQUE constraint, leaving its events without tokens."""
    base, _ = consistent(paths["db"])
    common = ["generate", "--db", paths["db"], "--session", "1", "-n", "400", "--ignore-eos", "--model",
              paths["model"]]
    first = _heedful(*common)
    time.sleep(0.5)
    second = _heedful(*common)
    errs = [p.communicate(timeout=300)[1] for p in (first, second)]
    codes = [first.returncode, second.returncode]
    assert sorted(codes) in ([0, 0], [0, 2]), (codes, errs)
    for code, err in zip(codes, errs):
        assert "Traceback" not in err and "UNIQUE" not in err
        if code == 2:
            assert "being written by another process" in err
    tokens, _ = consistent(paths["db"])
    conn = sqlite3.connect(paths["db"])
    resumes = conn.execute("SELECT count(*) FROM events WHERE op = 'resume'").fetchone()[0]
    conn.close()
    assert tokens == base + 400 * codes.count(0)
    assert resumes == codes.count(0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_kill_9_at_a_random_point_of_a_stream(tmp_path, tiny_qwen35_dir, seed):
    db = tmp_path / "k.db"
    child = subprocess.Popen([sys.executable, "-m", "tests.store.children", "generate", str(db), str(tiny_qwen35_dir)],
                             cwd=os.getcwd(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3 + random.Random(seed).random() * 4)
    child.send_signal(signal.SIGKILL)
    child.wait()
    if db.exists():
        consistent(db)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_kill_9_during_a_replay_leaves_the_script_whole_or_absent(tmp_path, tiny_qwen35_dir, seed):
    script = tmp_path / "long.jsonl"
    script.write_text('{"op": "config", "window": 8, "budget": 24}\n{"op": "prompt", "text": "The vault code is 4821."}\n'
                      '{"op": "generate", "n": 3000, "stop_at_eos": false}\n')
    db = tmp_path / "r.db"
    child = _heedful("replay", script, "--db", db, "--model", tiny_qwen35_dir)
    time.sleep(3 + random.Random(seed).random() * 5)
    child.send_signal(signal.SIGKILL)
    child.wait()
    if db.exists():
        tokens, _ = consistent(db)
        assert tokens == 0 or tokens > 3000  # nothing, or the prompt and all 3000 tokens
