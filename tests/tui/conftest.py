"""Shared pieces of the Pilot tests: a real store, an app over a tiny model, settling."""

from __future__ import annotations

import pytest

from heedful.selector.session import Session
from heedful.store import Store
from heedful.tui.app import HeedfulApp


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "chat.db")
    yield s
    s.close()


def chat_app(lm, store, tmp_path, **kw) -> HeedfulApp:
    """An app over a new recorded session (window 128, budget 256, 20 tokens per g)."""
    rec = store.new_session(title="pilot")
    session = Session(lm.model, lm.tokenizer, recorder=rec, gated=lm.gated, window=kw.pop("window", 128),
                      budget=kw.pop("budget", 256))
    kw.setdefault("export_dir", tmp_path)
    return HeedfulApp(session, store=store, recorder=rec, chunk=kw.pop("chunk", 20), show_speed=False, **kw)


async def settle(app, pilot):
    await app.workers.wait_for_complete()
    await pilot.pause()
