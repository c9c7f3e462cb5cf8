"""Start-up: `heedful --help`, every command's --help and `bench --help` load neither torch
nor transformers (the measuring modules of bench stream, kernels, memory and gpu still import
torch at their top: their own --help takes ~3 s). The subcommands of the groups (train, learn,
bench) are probed too."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from heedful.cli import COMMANDS, cli
from heedful.cli.bench import SUBCOMMANDS

TORCH_AT_TOP = {"stream", "kernels", "memory", "gpu"}

PROBE = """
import sys
from heedful.cli import cli
try:
    cli.main(args={args!r}, standalone_mode=False)
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "transformers", "textual") if m in sys.modules)
print("HEAVY", heavy)
"""


def _paths(group, ctx, prefix=()):
    """Every command's path under a click group, its subcommands' too (a group's own path first)."""
    for name in group.list_commands(ctx):
        path = (*prefix, name)
        if path[0] == "bench" and name in TORCH_AT_TOP:
            continue
        yield list(path)
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from _paths(cmd, click.Context(cmd, info_name=name, parent=ctx), path)


PATHS = list(_paths(cli, click.Context(cli, info_name="heedful")))


def test_every_command_and_subcommand_is_probed():
    assert {p[0] for p in PATHS} == set(COMMANDS)
    assert ["bench", "tui"] in PATHS and ["train", "corpus"] in PATHS  # subcommands of the groups too
    assert set(SUBCOMMANDS) - TORCH_AT_TOP <= {p[1] for p in PATHS if p[0] == "bench" and len(p) == 2}


@pytest.mark.parametrize("args", [["--help"], *[[*p, "--help"] for p in PATHS]], ids=" ".join)
def test_help_imports_no_torch(args):
    r = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout, (args, r.stdout[-300:])
