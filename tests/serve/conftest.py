"""A real `heedful serve` app on loopback (uvicorn in a thread, port 0) over the tiny chat
model, and helpers to read the store it writes."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

SETTINGS = {"window": 48, "budget": 96}


class Running:
    """An app served by uvicorn on a thread; `url` is its /v1 base."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    lifespan="on", timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.url = self.base + "/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve(lm, db, *, api_key=None, max_kv_bytes=1 << 30, **settings):
    from heedful.serve.app import Config, make_app
    from heedful.serve.pool import Pool
    from heedful.store import Store

    store = Store.open(db)
    pool = Pool(lm, store, {**SETTINGS, **settings}, max_kv_bytes=max_kv_bytes)
    app = make_app(pool, Config(model_id="tiny", api_key=api_key, max_tokens=256, default_max_tokens=16))
    running = Running(app)
    running.pool, running.store = pool, store
    return running


@pytest.fixture(scope="module")
def server(tiny_chat, tmp_path_factory):
    db = tmp_path_factory.mktemp("serve") / "serve.db"
    running = serve(tiny_chat, db)
    running.db = db
    yield running
    running.stop()
    running.store.close()


def integrity(db) -> dict:
    """SQLite's integrity check, and per session: tokens 0..n-1 with none missing."""
    conn = sqlite3.connect(db)
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        rows = conn.execute("SELECT session, count(*), min(idx), max(idx) FROM tokens GROUP BY session").fetchall()
        return {"integrity": ok, "gaps": [r for r in rows if (r[2], r[3]) != (0, r[1] - 1)]}
    finally:
        conn.close()


def stored_messages(db, sid: int) -> list[dict]:
    """The conversation a stored session holds, read through a fresh Store."""
    from heedful.selector.chat import messages
    from heedful.store import Store

    with Store.open(db, readonly=True) as st:
        data = st.load(sid)
    return messages(data.token_texts, data.token_sources, ["<|im_end|>", "<|endoftext|>"])
