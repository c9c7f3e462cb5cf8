"""Pilot tests of `heedful chat` with a tiny real model and a real store."""

from __future__ import annotations

import pytest

from heedful.tui.app import HeedfulApp
from heedful.tui.token_view import TokenView
from tests.tui.conftest import chat_app as _app
from tests.tui.conftest import settle as _settle

pytestmark = pytest.mark.anyio


async def test_prompt_generate_pin_with_keys_and_mouse_unpin_export_resume(tiny_qwen35, store, tmp_path):
    app = _app(tiny_qwen35, store, tmp_path)
    s = app.session
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press(*"The vault code is 4821.")
        await pilot.press("enter")
        await _settle(app, pilot)
        n_prompt = len(tiny_qwen35.tokenizer("The vault code is 4821.")["input_ids"])
        assert len(s) == n_prompt + 20 and s.stats().generated == 20
        assert app.focused is app.view
        # keys: home, right x3, shift+right x2, space -> pin tokens [3, 6)
        await pilot.press("home", "right", "right", "right", "shift+right", "shift+right", "space")
        await pilot.pause()
        assert (3, 6) in s.pins()
        # mouse: drag across the first line from column 0 to column 3, then p
        view = app.query_one(TokenView)
        first = view.token_at(0, 0)
        x0, y0 = view.gutter.left, view.gutter.top  # content (0, 0)
        await pilot.mouse_down(TokenView, offset=(x0, y0))
        await pilot.hover(TokenView, offset=(x0 + 2, y0))
        await pilot.mouse_up(TokenView, offset=(x0 + 2, y0))
        await pilot.press("p")
        await pilot.pause()
        assert any(a == first for a, b in s.pins()), s.pins()
        # unpin the key-made pin with space on its tokens
        await pilot.press("home", "right", "right", "right", "shift+right", "shift+right", "space")
        await pilot.pause()
        assert not any(a <= 4 < b for a, b in s.pins())
        # export from the key binding: a file is written and the person is told where
        await pilot.press("e")
        await pilot.pause()
        assert app.sessions.last_export is not None and app.sessions.last_export.exists()
        pins_now = s.pins()
    # the store saw every mark, as ranges, in order
    sid = app.recorder.session_id
    ops = [(e["op"], e.get("range")) for e in store.events(sid) if e["op"] in ("pin", "unpin")]
    assert ops[0] == ("pin", [3, 6]) and ops[-1] == ("unpin", [3, 6]) and len(ops) == 3
    # resume in a new app: the same pins
    from heedful.app.open import resume

    again = resume(store, sid, lm=tiny_qwen35)
    app2 = HeedfulApp(again, store=store, recorder=again.recorder, show_speed=False, export_dir=tmp_path)
    async with app2.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        assert again.pins() == pins_now
        assert len(again) == len(s)


async def test_pins_while_generating_and_stop(tiny_qwen35, store, tmp_path):
    """A pin made while the model streams goes through the engine between two tokens, and
    Esc stops the stream. (Pilot waits for the process to go idle after each key, which a
    streaming model never is, so this test checks what happened, not how fast.)"""
    app = _app(tiny_qwen35, store, tmp_path, chunk=200_000, window=64, budget=128, ignore_eos=True)
    s = app.session
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"Alice met Bob.", "enter")
        await pilot.press("home", "shift+right", "space")  # pin [0, 2) mid-stream
        await pilot.press("escape")
        await _settle(app, pilot)
        assert s.pins() and s.stats().generated < 200_000
    events = store.events(app.recorder.session_id)
    pins = [e for e in events if e["op"] == "pin"]
    assert pins and "at" in pins[0]  # made while the stream was running
    assert events[-1]["op"] == "stop" and events[-1]["at"] == len(s)


async def test_generation_failure_shows_an_error_and_the_app_stays_usable(tiny_qwen35, store, tmp_path):
    app = _app(tiny_qwen35, store, tmp_path, chunk=30)
    s = app.session
    layer = tiny_qwen35.model.model.layers[0].self_attn
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 25:
            raise RuntimeError("simulated CUDA error")

    async with app.run_test(size=(100, 30)) as pilot:
        handle = layer.register_forward_pre_hook(flaky)
        try:
            await pilot.press(*"Alice met Bob.", "enter")
            await _settle(app, pilot)
        finally:
            handle.remove()
        assert any("simulated CUDA error" in n.message for n in app._notifications)
        assert not app.generating
        before = len(s)
        await pilot.press("g")
        await _settle(app, pilot)
        assert len(s) == before + 30
        await pilot.press("home", "space")
        await pilot.pause()
        assert s.pins()


async def test_bad_marks_become_notifications(tiny_qwen35, store, tmp_path):
    app = _app(tiny_qwen35, store, tmp_path, window=8, budget=10)
    s = app.session
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"The vault code is 4821. Remember it.", "enter")
        await _settle(app, pilot)
        await pilot.press("home", *["shift+right"] * 6, "space")  # 7 pins + window 8 > budget 10
        await pilot.pause()
        assert any("budget" in n.message for n in app._notifications)
        assert not s.pins()


async def test_palette_settings_new_and_open_session(tiny_qwen35, store, tmp_path):
    app = _app(tiny_qwen35, store, tmp_path, chunk=10)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press(*"Alice met Bob.", "enter")
        await _settle(app, pilot)
        first = app.session
        first_id = app.recorder.session_id
        await pilot.press("ctrl+p")
        await pilot.press(*"window 12.5")  # whole numbers only: no such command, nothing breaks
        await pilot.pause(0.3)
        await pilot.press("enter", "escape")
        await pilot.pause()
        assert first.config.window == 128
        await pilot.press("ctrl+p")
        await pilot.press(*"window 32")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert first.config.window == 32
        await pilot.press("ctrl+p")
        await pilot.press(*"budget 200")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert first.config.budget == 200 and first.cache.capacity == 200
        await pilot.press("ctrl+p")
        await pilot.press(*"new session")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.session is not first and len(app.session) == 0 and app.session.config.window == 32
        assert app.focused is app.query_one("#prompt")  # an empty session: type
        await pilot.press(*"Carol.", "enter")
        await _settle(app, pilot)
        await pilot.press("ctrl+p")
        await pilot.press(*f"open session {first_id}")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.session.token_ids == first.token_ids and app.session.config.window == 32
        assert app.focused is app.view  # text to read and mark
    events = store.events(first_id)
    assert {"op": "set", "window": 32} in events and {"op": "set", "budget": 200} in events
