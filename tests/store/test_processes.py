"""Crash safety (SIGKILL mid-stream) and two processes writing one database at once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from heedful.app.open import resume
from heedful.app.replay import run_script
from heedful.app.script import parse_script
from heedful.store import Store

ROOT = Path(__file__).resolve().parents[2]


def _child(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.store.children", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _count(db: Path, sql: str) -> int:
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return c.execute(sql).fetchone()[0]
        finally:
            c.close()
    except sqlite3.Error:
        return 0


def test_sigkill_mid_stream_leaves_a_clean_prefix_that_resumes(tmp_path, tiny_qwen35_dir, tiny_qwen35):
    db = tmp_path / "crash.db"
    child = _child("generate", db, tiny_qwen35_dir)
    deadline = time.monotonic() + 180
    while _count(db, "SELECT count(*) FROM tokens") < 80:
        assert child.poll() is None, child.stderr.read().decode()
        assert time.monotonic() < deadline, "the child never got going"
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    idx = [i for (i,) in raw.execute("SELECT idx FROM tokens ORDER BY idx")]
    assert idx == list(range(len(idx)))  # a prefix, no gap
    seqs = [s for (s,) in raw.execute("SELECT seq FROM events ORDER BY seq")]
    assert seqs == list(range(len(seqs)))
    for op, args, at in raw.execute("SELECT op, args, tokens FROM events"):
        json.loads(args)  # no half-written event
        assert at <= len(idx)  # every event's tokens are on disk
    gen_at = raw.execute("SELECT tokens FROM events WHERE op = 'generate'").fetchone()[0]
    raw.close()

    with Store.open(db) as store:
        info = store.session()
        assert info.tokens == len(idx) and any(a <= len(idx) for a, _ in info.state.pins)
        events = store.events(info.id)
        stored = store.load(info.id).token_ids
        # the stored tokens are the stream's prefix: replaying the log up to there gives them
        for e in events:
            if e["op"] == "generate":
                e["n"] = len(idx) - gen_at
        script = tmp_path / "log.jsonl"
        script.write_text("".join(json.dumps(e) + "\n" for e in events))
        replayed = run_script(parse_script(script), script, lm=tiny_qwen35).session
        assert replayed.token_ids == stored

        s = resume(store, info.id, lm=tiny_qwen35)
        assert s.token_ids == stored
        list(s.generate(5))
        s.recorder.close()
        assert store.session(info.id).tokens == len(idx) + 5


def test_two_processes_write_two_sessions_at_once(tmp_path):
    db = tmp_path / "shared.db"
    Store.open(db).close()
    n = 3000
    kids = [_child("write", db, name, n) for name in ("alpha", "beta")]
    for k in kids:
        _, err = k.communicate(timeout=240)
        assert k.returncode == 0, err.decode()
    with Store.open(db) as store:
        infos = store.sessions()
        assert sorted(i.title for i in infos) == ["alpha", "beta"]
        for info in infos:
            data = store.load(info.id)
            assert data.token_texts == [f" {info.title}{i}" for i in range(n)]
            assert [e["op"] for e in store.events(info.id)].count("pin") == n // 100
            assert len(store.events(info.id)) == 2 + n // 50
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
