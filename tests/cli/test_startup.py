"""Start-up: `heedful --help`, every command's --help and `bench --help` load neither torch
nor transformers (the measuring modules of bench stream, kernels and memory still import
torch at their top: their own --help takes ~3 s)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from heedful.cli import COMMANDS
from heedful.cli.bench import SUBCOMMANDS

TORCH_AT_TOP = {"stream", "kernels", "memory"}

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


@pytest.mark.parametrize("args", [["--help"], *[[c, "--help"] for c in COMMANDS],
                                  *[["bench", c, "--help"] for c in sorted(set(SUBCOMMANDS) - TORCH_AT_TOP)]],
                         ids=" ".join)
def test_help_imports_no_torch(args):
    r = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout, (args, r.stdout[-300:])
