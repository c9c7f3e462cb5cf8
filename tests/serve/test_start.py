"""`heedful serve` at start-up: a port in use is one line and exit 2 before the model loads,
a --max-kv-bytes that cannot hold one session is one line and exit 2, and an IPv6 host's
banner URL has its brackets (and works)."""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.serve.conftest import SETTINGS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def heedful(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "heedful", "serve", *args], cwd=ROOT, env=ENV, timeout=timeout,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)


def model_args(model_dir):
    return ["--model", str(model_dir), "--dtype", "float32", "--device", "cpu",
            "--window", str(SETTINGS["window"]), "--budget", str(SETTINGS["budget"])]


def test_a_port_in_use_is_one_line_before_the_model_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # a model that does not exist: the port is checked first, so the error is the port's
        r = heedful("--port", str(port), "--db", str(tmp_path / "d.db"), "--model", str(tmp_path / "no-model"))
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"heedful: error: --port {port}: address already in use\n"


def test_a_kv_bound_below_one_session_is_refused_at_start(tiny_chat_dir, tmp_path):
    for size in ("1KB",):  # (0 as well: test_kv_bound.py, on the pool)
        r = heedful("--port", "0", "--db", str(tmp_path / "d.db"), "--max-kv-bytes", size, *model_args(tiny_chat_dir))
        assert r.returncode == 2, r.stderr
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("heedful: error: --max-kv-bytes "), r.stderr
        assert "needs up to" in lines[0]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_an_ipv6_host_has_brackets_in_the_banner(tiny_chat_dir, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "heedful", "serve", "--host", "::1", "--port", "0",
                             "--db", str(tmp_path / "d.db"), "--model-id", "tiny", *model_args(tiny_chat_dir)],
                            cwd=ROOT, env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()
    try:
        deadline, seen, url = time.monotonic() + 60, [], None
        while url is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"heedful serve did not start: {''.join(seen)}") from None
            seen.append(line)
            m = re.search(r"on (http://\S+/v1) ", line)
            if m:
                url = m.group(1)
        assert re.fullmatch(r"http://\[::1\]:\d+/v1", url), url
        r = httpx.get(url + "/models", timeout=30)
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "tiny"
    finally:
        proc.kill()
        proc.wait(timeout=10)
