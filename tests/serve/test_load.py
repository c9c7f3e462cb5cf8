"""A bounded load: 8 clients at once, 20 requests each, every one sending its whole growing
history (as OpenAI clients do), with KV memory for only 3 live sessions, so sessions are
released and rebuilt from the store while the others run. Every answer is checked against
the store afterwards: one session per client, its turns in order, none lost or mixed up."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.serve.conftest import integrity, serve, stored_messages

openai = pytest.importorskip("openai")

CLIENTS, REQUESTS = 8, 20


def test_eight_clients_twenty_requests_each(tiny_chat, tmp_path):
    probe = serve(tiny_chat, tmp_path / "probe.db")
    try:  # the KV bytes one session can grow to, to bound the server at three
        c = openai.OpenAI(base_url=probe.url, api_key="none", max_retries=0)
        one = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
        kv = probe.pool.session_bytes
        assert one.model_extra["heedful"]["kv_bytes"] <= kv
    finally:
        probe.stop()
        probe.store.close()
    running = serve(tiny_chat, tmp_path / "load.db", max_kv_bytes=int(kv * 3.5))
    peak, stop = [0], threading.Event()

    def watch():
        while not stop.wait(0.005):
            peak[0] = max(peak[0], running.pool.kv_bytes())

    def client(k: int):
        c = openai.OpenAI(base_url=running.url, api_key="none", max_retries=0, timeout=120)
        history, sessions = [], []
        for i in range(REQUESTS):
            history.append({"role": "user", "content": f"Client {k}, question {i}: what is {k} times {i}?"})
            kw = {"stream": True} if i % 2 else {}
            r = c.chat.completions.create(model="tiny", messages=history, max_tokens=4, temperature=0, **kw)
            if kw:
                text, extra = "", None
                for chunk in r:
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
                    extra = (chunk.model_extra or {}).get("heedful", extra)
            else:
                text, extra = r.choices[0].message.content, r.model_extra["heedful"]
            sessions.append(extra["session"])
            history.append({"role": "assistant", "content": text})
        return history, sessions

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with ThreadPoolExecutor(CLIENTS) as ex:
            results = list(ex.map(client, range(CLIENTS)))
    finally:
        stop.set()
        watcher.join()
        released = running.pool.released
        running.stop()
        running.store.close()
    db = tmp_path / "load.db"
    ids = [sessions[0] for _, sessions in results]
    assert len(set(ids)) == CLIENTS  # one session per client
    for k, (history, sessions) in enumerate(results):
        assert set(sessions) == {ids[k]}  # every request continued the client's own session
        stored = stored_messages(db, ids[k])
        assert [(m["role"], m["content"].strip()) for m in stored] == \
               [(m["role"], m["content"].strip()) for m in history]
    assert integrity(db) == {"integrity": "ok", "gaps": []}
    assert released > 0  # sessions were released for room and rebuilt from the store
    assert peak[0] <= int(kv * 3.5)
