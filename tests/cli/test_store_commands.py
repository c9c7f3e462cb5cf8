"""The store's commands through heedful's entry point: exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from heedful.store import Store
from tests.store.helpers import CONFIG, run_unprivileged, snapshot, stream

GOOD = '{"op": "config", "window": 8, "budget": 32}\n{"op": "prompt", "text": "The vault code is 4821."}\n'

BAD = [
    ("not-json", GOOD + "{op: prompt}\n", 3, "not JSON"),
    ("unknown-op", GOOD + '{"op": "teleport"}\n', 3, 'unknown op "teleport"'),
    ("missing-field", GOOD + '{"op": "generate"}\n', 3, "field 'n' must be"),
    ("wrong-type", GOOD + '{"op": "generate", "n": "5"}\n', 3, "field 'n' must be"),
    ("bad-range", GOOD + '{"op": "pin", "range": [5, 2]}\n', 3, "0 <= start < end"),
    ("no-target", GOOD + '{"op": "pin"}\n', 3, "exactly one target"),
    ("extra-field", GOOD + '{"op": "pin", "text": "x", "rnage": [1, 2]}\n', 3, "unknown field 'rnage'"),
    ("config-late", GOOD + '{"op": "config", "seed": 1}\n', 3, "first operation"),
    ("bad-setting", '{"op": "config", "windw": 8}\n', 1, "unknown setting 'windw'"),
    ("at-outside", GOOD + '{"op": "pin", "text": "vault", "at": 3}\n', 3, "only valid right after a generate"),
    ("truncated", GOOD + '{"op": "generate", "n"', 3, "truncated last line"),
    ("not-utf8", GOOD + '{"op": "prompt", "text": "caf\xe9"}\n', 3, "not UTF-8"),
    ("empty", "", 1, "empty script"),
    ("blank", "\n  \n", 1, "empty script"),
    ("array", "[1, 2]\n", 1, "expected a JSON object"),
]


@pytest.mark.parametrize("name,text,line,reason", BAD, ids=[b[0] for b in BAD])
def test_bad_scripts_exit_2_with_file_line_and_nothing_written(cli, tmp_path, name, text, line, reason):
    script = tmp_path / "s.jsonl"
    script.write_bytes(text.encode("latin-1") if name == "not-utf8" else text.encode())
    db = tmp_path / "out.db"
    code, out, err = cli("replay", script, "--db", db)
    assert code == 2
    assert err.count("\n") == 1 and f"s.jsonl:{line}: " in err and reason in err, err
    assert "Traceback" not in err and not db.exists()


RUNTIME_BAD = [
    ("text-not-found", '{"op": "pin", "text": "no such words"}\n', 3, "not found"),
    ("range-outside", '{"op": "unpin", "range": [3, 999]}\n', 3, "past the end"),
    ("stop-unreached", '{"op": "generate", "n": 2}\n{"op": "stop", "at": 500}\n', 4, "never reached"),
]


@pytest.mark.parametrize("name,tail,line,reason", RUNTIME_BAD, ids=[b[0] for b in RUNTIME_BAD])
def test_scripts_failing_while_running_write_nothing(cli, tmp_path, tiny_qwen35_dir, name, tail, line, reason):
    script = tmp_path / "s.jsonl"
    script.write_text(GOOD + tail)
    db = tmp_path / "out.db"
    Store.open(db).close()  # an existing database stays as it was
    code, out, err = cli("replay", script, "--db", db, "--model", tiny_qwen35_dir)
    assert code == 2 and f"s.jsonl:{line}: " in err and reason in err and err.count("\n") == 1, err
    with Store.open(db) as s:
        assert s.sessions() == []


def test_replay_json_then_export_and_sessions(cli, tmp_path, tiny_qwen35_dir):
    script = tmp_path / "s.jsonl"
    script.write_text(GOOD + '{"op": "pin", "text": "4821"}\n{"op": "generate", "n": 12, "stop_at_eos": false}\n'
                      '{"op": "drop", "range": [0, 2]}\n')
    db = tmp_path / "out.db"
    code, out, err = cli("replay", script, "--db", db, "--model", tiny_qwen35_dir, "--json")
    assert code == 0, err
    lines = [json.loads(ln) for ln in out.splitlines()]
    assert [d.get("op") for d in lines] == ["config", "prompt", "pin", "generate", "drop", None]
    assert lines[3]["line"] == 4 and len(lines[3]["ids"]) == 12 and lines[-1]["event"] == "summary"
    sid = lines[-1]["session"]

    code, out, err = cli("export", "--db", db, "--what", "events")
    assert code == 0 and [json.loads(ln)["op"] for ln in out.splitlines()] == [
        "config", "prompt", "pin", "generate", "drop"]
    events = tmp_path / "events.jsonl"
    code, _, _ = cli("export", "--db", db, "--session", sid, "--what", "events", "-o", events)
    assert code == 0
    code, out2, err = cli("replay", events, "--db", db, "--model", tiny_qwen35_dir, "--json")
    assert code == 0 and json.loads(out2.splitlines()[3])["ids"] == lines[3]["ids"]

    code, out, _ = cli("export", "--db", db, "--what", "pinned", "--format", "txt")
    assert code == 0 and "4821" in out
    code, out, _ = cli("sessions", "--db", db)
    assert code == 0 and len(out.splitlines()) == 3 and "TOKENS" in out
    code, out, _ = cli("sessions", "--db", db, "--json")
    rows = [json.loads(ln) for ln in out.splitlines()]
    assert [r["id"] for r in rows] == [1, 2] and rows[0]["tokens"] == rows[1]["tokens"] > 12
    code, out, _ = cli("sessions", "--db", db, "--search", "vault", "--json")
    assert code == 0 and {json.loads(ln)["session"] for ln in out.splitlines()} == {1, 2}


def test_bad_databases_and_sessions_are_one_line_errors(cli, tmp_path):
    notdb = tmp_path / "notes.txt"
    notdb.write_text("just text")
    for args in (["sessions", "--db", notdb], ["export", "--db", notdb], ["sessions", "--db", tmp_path / "no.db"]):
        code, out, err = cli(*args)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    db = tmp_path / "x.db"
    with Store.open(db) as s:
        rec = s.new_session()
        rec.event("config", CONFIG)
        stream(rec, 10)
        rec.close()
    code, out, err = cli("export", "--db", db, "--session", 7)
    assert code == 2 and "--session 7: no such session" in err
    code, out, err = cli("export", "--db", db, "--what", "all", "--format", "txt")
    assert code == 0 and out == "".join(f" w{i}" for i in range(10))


# ---------------------------------------------------------------- what the commands may touch
TEXT = "".join(f" w{i}" for i in range(10))


def _recorded(db):
    with Store.open(db) as s:
        rec = s.new_session()
        rec.event("config", CONFIG)
        stream(rec, 10)
        rec.close()
    return db.read_bytes()


def _one_line(code, err):
    return code == 2 and err.count("\n") == 1 and err.startswith("heedful: error: ") and "Traceback" not in err


def test_export_never_writes_over_its_database(cli, tmp_path, monkeypatch):
    db = tmp_path / "s.db"
    raw = _recorded(db)
    (tmp_path / "link.db").symlink_to(db)
    (tmp_path / "wal-link").symlink_to(tmp_path / "s.db-wal")
    os.link(db, tmp_path / "hard.db")
    monkeypatch.chdir(tmp_path)
    for db_arg, out in [(db, db), (db, "s.db"), (db, "./nothere/../s.db"), (db, "link.db"), (db, "hard.db"),
                        (db, "s.db-wal"), (db, "s.db-shm"), (db, "wal-link"), ("link.db", "s.db-wal"),
                        ("link.db", db)]:
        for force in ([], ["--force"]):
            code, _, err = cli("export", "--db", db_arg, "-o", out, *force)
            assert _one_line(code, err) and "is the database" in err, (out, err)
            assert db.read_bytes() == raw
    with Store.open(db, readonly=True) as s:
        assert len(s.load(1).token_ids) == 10


def test_export_onto_an_existing_file_needs_force(cli, tmp_path):
    db = tmp_path / "s.db"
    _recorded(db)
    out = tmp_path / "out.txt"
    out.write_text("keep me")
    out.chmod(0o640)
    code, _, err = cli("export", "--db", db, "--format", "txt", "-o", out)
    assert _one_line(code, err) and "exists" in err and "--force" in err and out.read_text() == "keep me"
    code, _, err = cli("export", "--db", db, "--format", "txt", "-o", out, "--force")
    assert code == 0 and out.read_text() == TEXT and out.stat().st_mode & 0o777 == 0o640
    (tmp_path / "lnk.txt").symlink_to(out)  # --force writes through a link, to the file it names
    code, _, err = cli("export", "--db", db, "--what", "pinned", "--format", "txt", "-o", tmp_path / "lnk.txt",
                       "--force")
    assert code == 0 and (tmp_path / "lnk.txt").is_symlink() and out.read_text() == ""
    code, out_text, _ = cli("export", "--db", db, "--format", "txt", "-o", "-")
    assert code == 0 and out_text == TEXT


def test_export_to_an_unwritable_path_is_one_line_and_leaves_nothing(cli, tmp_path):
    db = tmp_path / "s.db"
    _recorded(db)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    before = snapshot(tmp_path)
    for out, says in [(tmp_path / "nodir" / "o.md", "no such folder"), (tmp_path / "afile" / "o.md", "not a folder"),
                      (tmp_path / "adir", "is a folder")]:
        code, _, err = cli("export", "--db", db, "-o", out)
        assert _one_line(code, err) and says in err and str(out) in err, err
    code, _, err = cli("export", "--db", db, "--what", "events", "--format", "md", "-o", tmp_path / "o.md")
    assert _one_line(code, err) and "--format jsonl" in err
    assert snapshot(tmp_path) == before  # no output, no temporary file, no folder made

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = run_unprivileged("export", "--db", db, "-o", ro / "o.md")
    finally:
        ro.chmod(0o755)
    assert _one_line(r.returncode, r.stderr) and "permission denied" in r.stderr.lower(), r.stderr
    assert os.listdir(ro) == []


GOOD_FILE = '{"op": "config", "window": 8, "budget": 32}\n{"op": "prompt", "text": "hi"}\n'


def test_replay_checks_the_database_before_loading_the_model(cli, tmp_path):
    script = tmp_path / "s.jsonl"
    script.write_text(GOOD_FILE)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    nomodel = tmp_path / "no-such-model"
    before = snapshot(tmp_path)
    for db, says in [(tmp_path / "adir", "is a directory"), (tmp_path / "afile" / "x.db", "not a folder"),
                     (tmp_path / "afile" / "sub" / "x.db", "not a folder")]:
        code, _, err = cli("replay", script, "--db", db, "--model", nomodel)
        assert _one_line(code, err) and says in err and "no-such-model" not in err, err
    assert snapshot(tmp_path) == before

    db = tmp_path / "ro.db"
    _recorded(db)
    ro = tmp_path / "ro"
    ro.mkdir()
    db.chmod(0o444)
    ro.chmod(0o555)
    try:
        for target, says in [(db, "read-only"), (ro / "new.db", "not writable")]:
            r = run_unprivileged("replay", script, "--db", target, "--model", nomodel)
            assert _one_line(r.returncode, r.stderr) and says in r.stderr, r.stderr
            assert "no-such-model" not in r.stderr
    finally:
        ro.chmod(0o755)
    assert os.listdir(ro) == []


def test_sessions_and_export_read_a_read_only_database(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "s.db"
    _recorded(db)
    db.chmod(0o444)
    folder.chmod(0o555)
    before = snapshot(folder)
    try:
        r = run_unprivileged("sessions", "--db", db)
        assert r.returncode == 0 and "TOKENS" in r.stdout and len(r.stdout.splitlines()) == 2, r.stderr
        r = run_unprivileged("sessions", "--db", db, "--search", "w3", "--json")
        assert r.returncode == 0 and json.loads(r.stdout.splitlines()[0])["range"] == [3, 4], r.stderr
        r = run_unprivileged("export", "--db", db, "--format", "txt")
        assert r.returncode == 0 and r.stdout == TEXT, r.stderr
        assert snapshot(folder) == before
        folder.chmod(0o755)  # a writable folder, a read-only file
        r = run_unprivileged("export", "--db", db, "--what", "events")
        assert r.returncode == 0 and r.stdout.count("\n") == 1, r.stderr
        assert db.read_bytes() == before["s.db"][0]
    finally:
        folder.chmod(0o755)


def test_resuming_a_missing_database_creates_nothing(cli, tmp_path):
    db = tmp_path / "new.db"
    code, _, err = cli("chat", "--session", 99, "--db", db)
    assert _one_line(code, err) and "no such database" in err and not db.exists(), err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("sql,says", [
    ("UPDATE sessions SET state = '{pins'", "session 1: column state is not JSON"),
    ("UPDATE sessions SET created = 'yesterday'", "session 1: column created"),
    ("DELETE FROM tokens WHERE idx = 4", "session 1: tokens [4, 5) are missing"),
])
def test_hand_edited_databases_through_the_commands(cli, tmp_path, sql, says):
    db = tmp_path / "s.db"
    _recorded(db)
    c = sqlite3.connect(db)
    c.execute(sql)
    c.commit()
    c.close()
    for args in (["sessions"], ["export", "--format", "txt"]):
        code, _, err = cli(*args, "--db", db)
        assert _one_line(code, err) and says in err, err
