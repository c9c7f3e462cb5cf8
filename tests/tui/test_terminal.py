"""A real terminal: tmux runs `heedful chat` with the embedded default model, keys are sent,
the captured pane shows the generated text and the pin marker, and the app quits cleanly."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from heedful.models.loading import default_model_dir

pytestmark = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)"),
    pytest.mark.skipif(default_model_dir() is None, reason="no embedded default model in this build"),
]


def _tmux(*args) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def _wait_for(name: str, pattern: str, timeout: float = 60) -> str:
    end, pane = time.monotonic() + timeout, ""
    while time.monotonic() < end:
        pane = _tmux("capture-pane", "-t", name, "-p")
        if re.search(pattern, pane):
            return pane
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {pattern!r}; pane:\n{pane}")


def test_chat_in_tmux(tmp_path):
    name = f"heedful-test-{int(time.time() * 1000) % 10**8}"
    exe = Path(sys.executable).parent / "heedful"
    db = tmp_path / "chat.db"
    cmd = f"OMP_NUM_THREADS=1 {exe} chat --db {db} --chunk 30 --window 64 --budget 128"
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "120", "-y", "32", cmd], check=True)
    try:
        _wait_for(name, r"memory \d+/128")
        _tmux("send-keys", "-t", name, "The vault code is 4821.", "Enter")
        pane = _wait_for(name, r"generated 30")
        assert "The vault code is 4821." in pane
        _tmux("send-keys", "-t", name, "Home", "Right", "S-Right", "Space")
        pane = _wait_for(name, r"\[1,3\)")  # the pin marker in the side panel
        assert "pinned 2" in pane
        _tmux("send-keys", "-t", name, "C-q")
        end = time.monotonic() + 15
        while time.monotonic() < end and subprocess.run(["tmux", "has-session", "-t", name],
                                                         capture_output=True).returncode == 0:
            time.sleep(0.3)
        assert subprocess.run(["tmux", "has-session", "-t", name], capture_output=True).returncode != 0, \
            "the app did not quit"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
    from heedful.store import Store

    with Store.open(db) as store:
        (info,) = store.sessions()
        ops = [e["op"] for e in store.events(info.id)]
        assert ops[:3] == ["config", "prompt", "generate"] and "pin" in ops
        assert info.tokens >= 30
