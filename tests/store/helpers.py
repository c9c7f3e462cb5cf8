"""Drives a SessionRecorder the way the engine does, without a model; runs the CLI where file
modes stop writes; snapshots a folder to show nothing changed."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from heedful.selector.recorder import TokenRecord

CONFIG = {"model": "tiny", "window": 8, "budget": 32, "sinks": 0, "seed": 0}


def words(n: int, start: int = 0, source: str = "generated") -> list[TokenRecord]:
    return [TokenRecord(i, 1000 + i, f" w{i}", source) for i in range(start, start + n)]


def stream(rec, n: int, window: int = 8, source: str = "generated") -> None:
    """Appends n tokens one by one, evicting the token that leaves the window each step."""
    start = rec.state.tokens
    for i in range(start, start + n):
        if i - window >= 0 and i - window not in rec.state.pins and i - window not in rec.state.evicted:
            rec.evicted([(i - window, i - window + 1)], "window")
        rec.tokens([TokenRecord(i, 1000 + i, f" w{i}", source)])


# ---------------------------------------------------------------- without write permission
ROOT = Path(__file__).resolve().parents[2]
_CAPS = (1, 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: root's way past file modes
_probe: list = []


def _drop_caps() -> None:
    """preexec_fn: as root, takes the capabilities that ignore file modes out of the bounding
    set, so the exec'd program (still uid 0, owner of the test's files) obeys chmod."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in _CAPS:
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_unprivileged(*args, cwd=None):
    """Runs `python -m heedful ARGS` in a process that file modes stop (chmod 0o555 means
    read-only to it); skips the test when that cannot be arranged (root that cannot drop
    CAP_DAC_OVERRIDE)."""
    pre = _drop_caps if os.geteuid() == 0 else None
    if not _probe:
        d = tempfile.mkdtemp()
        try:
            os.chmod(d, 0o555)
            code = "import sys; open(sys.argv[1] + '/probe', 'w')"
            try:
                r = subprocess.run([sys.executable, "-c", code, d], preexec_fn=pre, capture_output=True)
                _probe.append(r.returncode != 0)
            except OSError:
                _probe.append(False)
        finally:
            os.chmod(d, 0o755)
            for f in os.listdir(d):
                os.unlink(os.path.join(d, f))
            os.rmdir(d)
    if not _probe[0]:
        pytest.skip("file modes do not stop this user's writes (root that cannot drop CAP_DAC_OVERRIDE)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "heedful", *map(str, args)], preexec_fn=pre, cwd=cwd or ROOT,
                          env=env, capture_output=True, text=True)


def snapshot(folder) -> dict:
    """{name: (bytes, mtime_ns, mode)} of every file in a folder: to show nothing changed."""
    out = {}
    for name in sorted(os.listdir(folder)):
        p = os.path.join(folder, name)
        st = os.stat(p)
        out[name] = (open(p, "rb").read() if os.path.isfile(p) else None, st.st_mtime_ns, st.st_mode)
    return out
