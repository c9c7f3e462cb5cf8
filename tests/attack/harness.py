"""The attack suite's table and its checks.

A case is a command line (or an API call), what it must end with (exit code, the shape of
its one line on stderr) and what must be unchanged afterwards: the database (its rows,
dumped, and `pragma integrity_check`) and the files of the case's folder. Placeholders in
a case's arguments: {db} (a copy of a store with one recorded session), {model} (a tiny
gated model folder), {llama} (a tiny ungated one), {tmp} (the case's own folder)."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

PROMPT = "The vault code is 4821. Remember it. The weather was calm and the lake was still."


@dataclass
class Case:
    id: str
    args: list
    code: int = 2
    shape: str = ""  # a regex the one stderr line must match (search)
    unchanged: bool = True  # the database and the folder's files are as they were
    setup: Callable | None = None  # setup(tmp: Path, paths: dict) before the command
    check: Callable | None = None  # check(tmp, paths, out, err) after it
    stdin: str | None = None
    marks: list = field(default_factory=list)

    def param(self):
        return pytest.param(self, id=self.id, marks=self.marks)


def fill(args, paths: dict) -> list[str]:
    out = []
    for a in args:
        a = str(a)
        for k, v in paths.items():
            a = a.replace("{" + k + "}", str(v))
        out.append(a)
    return out


def db_state(path) -> tuple | None:
    """What must not change: every row (a dump) and the integrity check; None: no file."""
    path = Path(path)
    if not path.is_file():  # a FIFO would be waited on: its kind is what must not change
        return ("not a file", path.exists(), path.is_dir())
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        return ok, tuple(conn.iterdump())
    except sqlite3.DatabaseError:  # not a database (the attack's own garbage): its bytes
        return "bytes", hashlib.sha256(path.read_bytes()).hexdigest()
    finally:
        conn.close()


def files(folder) -> dict:
    """The folder's files (a database's -wal and -shm left out: SQLite's own) with sizes."""
    out = {}
    for root, dirs, names in os.walk(folder):
        for n in names + dirs:
            p = os.path.join(root, n)
            if n.endswith(("-wal", "-shm")):
                continue
            rel = os.path.relpath(p, folder)
            out[rel] = os.lstat(p).st_size if not os.path.isdir(p) or os.path.islink(p) else "dir"
    return out


def one_line(err: str, code: int, shape: str = "") -> None:
    """Bad input or a fault: exactly one line on stderr, no traceback, matching `shape`."""
    # progress notes ("heedful: converting X.gguf ...") are not the error line
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("heedful: converting ")]
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("heedful: error: "), lines[0]
    if shape:
        assert re.search(shape, lines[0]), f"{lines[0]!r} does not match {shape!r}"


def run_case(case: Case, cli, tmp: Path, paths: dict, capsys=None):
    if case.setup is not None:
        case.setup(tmp, paths)
    before_db = db_state(paths["db"]) if "db" in paths else None
    before = files(tmp)
    code, out, err = cli(*fill(case.args, paths))
    assert code == case.code, f"exit {code}, expected {case.code}\nstderr: {err}"
    if case.code != 0:
        one_line(err, case.code, case.shape)
    if case.unchanged:
        if "db" in paths:
            assert db_state(paths["db"]) == before_db, "the database changed"
        assert files(tmp) == before, f"files changed: {before} -> {files(tmp)}"
    if case.check is not None:
        case.check(tmp, paths, out, err)
    return out, err
