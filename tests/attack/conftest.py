"""Fixtures of the attack suite: a store with one recorded session (built once, copied per
case), the tiny model folders, and `attack`, which runs one case of a table."""

from __future__ import annotations

import contextlib
import io
import shutil

import pytest

from tests.attack.harness import PROMPT, run_case


def run_main(*args) -> int:
    """heedful's CLI in process, its output discarded; the exit code."""
    import heedful.cli

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            heedful.cli.main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    assert code == 0, err.getvalue()
    return code


@pytest.fixture(scope="session")
def base_db(tmp_path_factory, tiny_qwen35_dir):
    """A store whose session 1 holds PROMPT and 12 generated tokens, window 8, budget 24,
    "4821" pinned."""
    db = tmp_path_factory.mktemp("attack-base") / "base.db"
    run_main("generate", PROMPT, "--model", tiny_qwen35_dir, "--db", db, "-n", 12, "--window", 8,
             "--budget", 24, "--pin", "4821", "--ignore-eos")
    return db


@pytest.fixture
def paths(tmp_path, base_db, tiny_qwen35_dir, tiny_llama_dir):
    work = tmp_path / "case"
    work.mkdir()
    db = work / "s.db"
    shutil.copyfile(base_db, db)
    return {"db": str(db), "model": str(tiny_qwen35_dir), "llama": str(tiny_llama_dir), "tmp": str(work)}


@pytest.fixture
def attack(cli, paths):
    """attack(case): runs it and checks its exit code, its line and what is unchanged."""
    from pathlib import Path

    def run(case):
        return run_case(case, cli, Path(paths["tmp"]), paths)

    return run
