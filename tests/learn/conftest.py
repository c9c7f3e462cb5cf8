"""Recorded sessions on the tiny gated model (generated episodes replayed into a store) and
a picker learned from them, shared by the tests of heedful.learn."""

from __future__ import annotations

import json

import pytest

import heedful.cli


def _main(*args):
    with pytest.raises(SystemExit) as e:
        heedful.cli.main([str(a) for a in args])
    return e.value.code


@pytest.fixture(scope="session")
def recorded(tmp_path_factory, tiny_qwen35_dir):
    """(db, episodes folder): 12 generated sessions replayed into a store."""
    d = tmp_path_factory.mktemp("learn")
    assert _main("learn", "episodes", "--out", d / "eps", "-n", 12, "--sentences", 6, "--arrangement",
                 "first,after", "--seed", 1, "--window", 32, "--budget", 256) == 0
    scripts = sorted((d / "eps" / "scripts").glob("*.jsonl"))
    assert _main("replay", *scripts, "--db", d / "rec.db", "--model", tiny_qwen35_dir) == 0
    return d / "rec.db", d / "eps"


@pytest.fixture(scope="session")
def picker_dir(recorded, tiny_qwen35_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("picker") / "pk"
    assert _main("learn", "--db", recorded[0], "--out", out, "--model", tiny_qwen35_dir, "--epochs", 4) == 0
    return out


def summary_of(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])
