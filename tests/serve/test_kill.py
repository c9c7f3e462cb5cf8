"""`heedful serve` as a process, killed with SIGKILL in the middle of a streamed reply: the
store passes SQLite's integrity check, holds no half turn (the request in flight is absent
whole), and a new server continues the session on the next request."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import httpx

from tests.serve.conftest import SETTINGS, integrity, stored_messages

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Process:
    def __init__(self, model_dir, db):
        args = [sys.executable, "-m", "heedful", "serve", "--model", str(model_dir), "--dtype", "float32",
                "--device", "cpu", "--db", str(db), "--port", "0", "--model-id", "tiny",
                "--window", str(SETTINGS["window"]), "--budget", str(SETTINGS["budget"])]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in self.proc.stderr], daemon=True).start()
        deadline, seen = time.monotonic() + 60, []
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise AssertionError(f"heedful serve did not start: {''.join(seen)}") from None
            seen.append(line)
            m = re.search(r"on http://([\d.]+):(\d+)/v1", line)
            if m:
                self.url = f"http://{m.group(1)}:{m.group(2)}/v1"
                return

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def test_kill_9_mid_stream_leaves_the_store_whole_and_the_next_server_continues(tiny_chat_dir, tmp_path):
    db = tmp_path / "killed.db"
    a = Process(tiny_chat_dir, db)
    try:
        with httpx.Client(base_url=a.url, timeout=60) as c:
            u1 = {"role": "user", "content": "Write a very long list of numbers."}
            r = c.post("/chat/completions", json={"messages": [u1], "max_tokens": 4}).json()
            sid = r["heedful"]["session"]
            history = [u1, r["choices"][0]["message"], {"role": "user", "content": "Go on, without end."}]
            before = stored_messages(db, sid)
            pieces = 0
            with c.stream("POST", "/chat/completions", json={"messages": history, "max_tokens": 256,
                                                              "stream": True}) as s:
                for line in s.iter_lines():
                    if '"content"' in line and '"content": ""' not in line:
                        pieces += 1
                    if pieces == 3:
                        a.kill()  # mid-stream
                        break
            assert pieces == 3
    finally:
        a.kill()
    assert integrity(db) == {"integrity": "ok", "gaps": []}
    assert stored_messages(db, sid) == before  # the request in flight left nothing: no half turn
    from heedful.store import Store

    with Store.open(db, readonly=True) as st:
        stored_tokens = len(st.load(sid).token_ids)
    b = Process(tiny_chat_dir, db)
    try:
        with httpx.Client(base_url=b.url, timeout=60) as c:
            r = c.post("/chat/completions", json={"messages": history, "max_tokens": 4}).json()
            h = r["heedful"]
            assert h["session"] == sid and h["continued"] and h["rebuilt_tokens"] > 0
            # the new turn only: the tokens the stream grew by, less the reply
            assert h["prefill_tokens"] == h["tokens"] - stored_tokens - r["usage"]["completion_tokens"]
    finally:
        b.kill()
    msgs = stored_messages(db, sid)
    assert [m["content"].strip() for m in msgs] == [m["content"].strip() for m in history] + \
           [r["choices"][0]["message"]["content"].strip()]
    assert integrity(db) == {"integrity": "ok", "gaps": []}
