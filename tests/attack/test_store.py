"""Store attacks: a refused command changes nothing in the store (resume, recall), bad
databases of every kind are refused in one line by every command that opens one, and a
path that is not a regular file is refused before anything opens it."""

from __future__ import annotations

import os
import socket
import sqlite3

import pytest

from tests.attack.harness import Case, fill

M = ["--model", "{model}"]
RESUME = ["generate", "--db", "{db}", "--session", "1", "-n", "2", *M]


def sql(*statements):
    def setup(tmp, paths):
        conn = sqlite3.connect(paths["db"])
        for s in statements:
            conn.execute(s)
        conn.commit()
        conn.close()

    return setup


REFUSED_RESUME = [
    Case("resume-budget-too-small", [*RESUME, "--budget", "4"], shape=r"--budget 4 is smaller"),
    Case("resume-window-huge", [*RESUME, "--window", "100000"], shape=r"window 100000"),
    Case("resume-fold-budget-huge", [*RESUME, "--fold-budget", "5000"], shape=r"--fold-budget 5000"),
    Case("resume-fold-compressor-missing", [*RESUME, "--fold-budget", "2", "--fold-block", "4", "--fold-compressor",
                                            "{tmp}/no-such-compressor"], shape=r"compressor|no-such"),
    Case("resume-pin-not-found", [*RESUME, "--pin", "zzz"], shape=r"'zzz' not found"),
    Case("resume-pin-bad-regex", [*RESUME, "--pin", "/(unclosed/"], shape=r"--pin /\(unclosed/"),
    Case("resume-no-such-session", ["generate", "--db", "{db}", "--session", "99", "-n", "2", *M],
         shape=r"--session 99: no such session"),
    Case("resume-token-id-past-vocab", RESUME, shape=r"token id 99999 is outside",
         setup=sql("UPDATE tokens SET token_id = 99999 WHERE idx = 3")),
    Case("resume-token-id-negative", RESUME, shape=r"token id -5 is outside",
         setup=sql("UPDATE tokens SET token_id = -5 WHERE idx = 2")),
    Case("resume-config-window-text", RESUME, shape=r"window",
         setup=sql("""UPDATE sessions SET config = json_set(config, '$.window', 'eight')""")),
    Case("resume-config-budget-float", RESUME, shape=r"budget",
         setup=sql("""UPDATE sessions SET config = json_set(config, '$.budget', 2.5)""")),
    Case("resume-config-temperature-list", RESUME, shape=r"temperature",
         setup=sql("""UPDATE sessions SET config = json_set(config, '$.temperature', json('[1]'))""")),
    Case("resume-config-not-object", RESUME, shape=r"config",
         setup=sql("""UPDATE sessions SET config = '[1, 2]'""")),
    Case("resume-another-model", [*RESUME[:-1], "{llama}"], shape=r"recorded with another model"),
    Case("resume-default-model", [*RESUME[:-2], "--model", "default"],
         shape=r"recorded with another (model|tokenizer)"),
    Case("recall-another-model", ["recall", "vault", "--db", "{db}", "--model", "{llama}"],
         shape=r"recorded with another model"),
    Case("resume-fingerprints-garbage", RESUME, shape=r"fingerprints is 5",
         setup=sql("""UPDATE sessions SET state = json_set(state, '$.fingerprints', 5)""")),
    Case("recall-text-not-found", ["recall", "zzzz", "--db", "{db}", *M], shape=r"'zzzz' not found"),
    Case("recall-regex-not-found", ["recall", "/q{3}z/", "--db", "{db}", *M], shape=r"matches nothing"),
    Case("recall-range-inverted", ["recall", "--range", "5", "2", "--db", "{db}", *M], shape=r"inverted"),
    Case("recall-range-past-end", ["recall", "--range", "500", "600", "--db", "{db}", *M], shape=r"past the end"),
    Case("recall-range-empty", ["recall", "--range", "3", "3", "--db", "{db}", *M], shape=r"empty|range"),
    Case("recall-no-such-session", ["recall", "vault", "--db", "{db}", "--session", "7", *M],
         shape=r"--session 7: no such session"),
    Case("recall-both-targets", ["recall", "vault", "--range", "1", "2", "--db", "{db}", *M], shape=r"one of them"),
]


@pytest.mark.parametrize("case", [c.param() for c in REFUSED_RESUME])
def test_a_refused_resume_or_recall_changes_nothing(attack, case):
    attack(case)


def test_a_refused_resume_leaves_later_runs_working(cli, paths):
    """The reported defect: after a refused --budget, the session's config still holds the
    old budget, so a plain continuation runs."""
    code, _, err = cli(*fill(RESUME, paths), "--budget", "4")
    assert code == 2
    code, _, err = cli(*fill(RESUME, paths))
    assert code == 0, err


def test_a_refused_new_run_leaves_no_file(cli, paths, tmp_path):
    db = tmp_path / "new.db"
    code, _, err = cli("generate", "The vault code is 4821.", "--pin", "zzz", "--db", db, "--model", paths["model"])
    assert code == 2 and "'zzz' not found" in err
    assert not any(p.name.startswith("new.db") for p in tmp_path.iterdir())


# ---------------------------------------------------------------- bad databases
def _write(data: bytes):
    def setup(tmp, paths):
        os.unlink(paths["db"])
        with open(paths["db"], "wb") as f:
            f.write(data)

    return setup


def _foreign(tmp, paths):
    os.unlink(paths["db"])
    conn = sqlite3.connect(paths["db"])
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()


def _fifo(tmp, paths):
    os.unlink(paths["db"])
    os.mkfifo(paths["db"])


def _socket(tmp, paths):
    os.unlink(paths["db"])
    s = socket.socket(socket.AF_UNIX)
    s.bind(paths["db"])
    s.close()


def _dir(tmp, paths):
    os.unlink(paths["db"])
    os.mkdir(paths["db"])


BAD_DBS = {
    "random-bytes": (_write(os.urandom(4096)), r"not an SQLite database"),
    "text-file": (_write(b"hello, this is not a database\n" * 10), r"not an SQLite database"),
    "foreign-sqlite": (_foreign, r"not a heedful store"),
    "future-schema": (sql("INSERT INTO heedful_schema (version, applied) VALUES (999, 0)"), r"newer heedful"),
    "schema-table-empty": (sql("DELETE FROM heedful_schema"), r"holds no version"),
    "missing-table": (sql("DROP TABLE evictions"), r"missing"),
    "truncated": (lambda tmp, p: os.truncate(p["db"], 1024), r"corrupt|not a heedful|missing|malformed"),
    "fifo": (_fifo, r"is a FIFO"),
    "socket": (_socket, r"is a socket"),
    "directory": (_dir, r"is a directory"),
}
COMMANDS = {
    "sessions": ["sessions", "--db", "{db}"],
    "search": ["sessions", "--db", "{db}", "--search", "vault"],
    "export": ["export", "--db", "{db}"],
    "resume": RESUME,
    "recall": ["recall", "vault", "--db", "{db}", *M],
}
BAD_DB_CASES = [Case(f"{cmd}-{kind}", args, shape=shape, setup=setup)
                for kind, (setup, shape) in BAD_DBS.items() for cmd, args in COMMANDS.items()]


@pytest.mark.parametrize("case", [c.param() for c in BAD_DB_CASES])
def test_a_bad_database_is_refused_in_one_line(attack, case):
    attack(case)


def test_a_device_as_db_is_refused_before_it_is_opened(cli):
    for args in (["sessions", "--db", "/dev/zero"], ["export", "--db", "/dev/null"]):
        code, _, err = cli(*args)
        assert code == 2 and "is a device" in err, err


# ---------------------------------------------------------------- the API chat and the TUI resume through
@pytest.mark.parametrize("settings", [{"budget": 4}, {"window": 100000}, {"fold_budget": 5000}],
                         ids=["budget", "window", "fold-budget"])
def test_the_resume_api_refused_changes_nothing(paths, tiny_qwen35, settings):
    """heedful.app.open.resume (what `chat --session` and the TUI call): refused, no event."""
    from heedful.app.open import resume
    from heedful.errors import HeedfulError
    from heedful.store import Store
    from tests.attack.harness import db_state

    before = db_state(paths["db"])
    with Store.open(paths["db"]) as store:
        with pytest.raises(HeedfulError):
            resume(store, 1, lm=tiny_qwen35, **settings)
    assert db_state(paths["db"]) == before
    with Store.open(paths["db"]) as store:  # and the claim is given back
        s = resume(store, 1, lm=tiny_qwen35)
        s.recorder.close()


# ---------------------------------------------------------------- good input: exit 0, quietly
def _events_end_with(*ops):
    def check(tmp, paths, out, err):
        conn = sqlite3.connect(paths["db"])
        got = [op for (op,) in conn.execute("SELECT op FROM events ORDER BY seq")]
        conn.close()
        got = [op for k, op in enumerate(got) if k == 0 or got[k - 1] != op]  # a pin of each occurrence
        assert got[-len(ops):] == list(ops), got
        assert "Warning" not in err and "Traceback" not in err, err

    return check


GOOD = [
    Case("good-resume", [*RESUME, "--json"], code=0, unchanged=False, check=_events_end_with("resume", "generate")),
    Case("good-resume-pin", [*RESUME, "--pin", "vault"], code=0, unchanged=False,
         check=_events_end_with("resume", "pin", "generate")),
    Case("good-recall", ["recall", "vault", "--db", "{db}", *M], code=0, unchanged=False,
         check=_events_end_with("resume", "recall")),
    Case("good-recall-range", ["recall", "--range", "0", "3", "--db", "{db}", *M, "--json"], code=0,
         unchanged=False, check=_events_end_with("resume", "recall")),
    Case("good-sessions", ["sessions", "--db", "{db}"], code=0),
    Case("good-export-events", ["export", "--db", "{db}", "--what", "events"], code=0),
    Case("good-export-file", ["export", "--db", "{db}", "-o", "{tmp}/out.md"], code=0, unchanged=False),
]


@pytest.mark.parametrize("case", [c.param() for c in GOOD])
def test_good_input_exits_0(attack, case):
    attack(case)


# ---------------------------------------------------------------- export never over the database
def _link(kind, target_suffix=""):
    def setup(tmp, paths):
        target = paths["db"] + target_suffix
        if target_suffix and not os.path.exists(target):
            open(target, "wb").close()
        (os.symlink if kind == "symlink" else os.link)(target, f"{tmp}/out.md")

    return setup


EXPORT_OVER = [
    Case("export-onto-db", ["export", "--db", "{db}", "-o", "{db}", "--force"], shape=r"is the database"),
    Case("export-onto-wal", ["export", "--db", "{db}", "-o", "{db}-wal", "--force"], shape=r"is the database",
         setup=lambda tmp, p: open(p["db"] + "-wal", "wb").close()),
    Case("export-onto-shm", ["export", "--db", "{db}", "-o", "{db}-shm", "--force"], shape=r"is the database"),
    Case("export-onto-symlink", ["export", "--db", "{db}", "-o", "{tmp}/out.md", "--force"],
         shape=r"is the database", setup=_link("symlink")),
    Case("export-onto-hardlink", ["export", "--db", "{db}", "-o", "{tmp}/out.md", "--force"],
         shape=r"is the database", setup=_link("hardlink")),
    Case("export-onto-existing", ["export", "--db", "{db}", "-o", "{tmp}/out.md"], shape=r"exists \(--force",
         setup=lambda tmp, p: open(f"{tmp}/out.md", "w").write("keep me")),
    Case("export-into-folder", ["export", "--db", "{db}", "-o", "{tmp}"], shape=r"is a folder"),
    Case("export-under-a-file", ["export", "--db", "{db}", "-o", "{db}/x.md"], shape=r"x\.md"),
]


@pytest.mark.parametrize("case", [c.param() for c in EXPORT_OVER])
def test_export_never_writes_over_the_database(attack, case):
    attack(case)
