"""Keys on the token view and the focus between the view and the prompt box."""

from __future__ import annotations

import pytest

from tests.tui.conftest import chat_app, settle

pytestmark = pytest.mark.anyio


async def test_home_end_and_arrows_move_the_token_cursor_in_a_long_stream(tiny_qwen35, store, tmp_path):
    """TokenView is a ScrollView, whose own bindings scroll on home/end/up/down once the
    stream is taller than the view; the keys must move the token cursor instead."""
    app = chat_app(tiny_qwen35, store, tmp_path, chunk=300, window=400, budget=512, ignore_eos=True)
    s = app.session
    async with app.run_test(size=(60, 16)) as pilot:
        await pilot.press(*"The vault code is 4821.", "enter")
        await settle(app, pilot)
        view = app.view
        assert app.focused is view and view.max_scroll_y > 0  # taller than the view: it scrolls
        await pilot.press("end")
        assert view.cursor == len(s) - 1 and view.follow
        await pilot.press("up")
        assert view._line_of(view.cursor) == view._line_of(len(s) - 1) - 1
        await pilot.press("home")
        assert view.cursor == 0 and view.scroll_offset.y == 0 and not view.follow
        await pilot.press("right", "right", "space")
        await pilot.pause()
        assert s.pins() == [(2, 3)]
        await pilot.press("end", "space")
        await pilot.pause()
        assert s.pins() == [(2, 3), (len(s) - 1, len(s))]


async def test_focus_starts_in_the_prompt_when_empty_and_on_the_text_after_a_resume(tiny_qwen35, store, tmp_path):
    from heedful.app.open import resume
    from heedful.tui.app import HeedfulApp

    app = chat_app(tiny_qwen35, store, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        prompt = app.query_one("#prompt")
        assert app.focused is prompt  # nothing to read yet: type
        await pilot.press(*"Alice met Bob.", "enter")
        await settle(app, pilot)
        assert app.focused is app.view
        # Tab and i go to the prompt box, Esc comes back; the footer says so
        assert app.screen.active_bindings["tab"].binding.show
        await pilot.press("tab")
        assert app.focused is prompt
        assert app.screen.active_bindings["escape"].binding.show
        await pilot.press("escape")
        assert app.focused is app.view
        await pilot.press("i")
        assert app.focused is prompt and prompt.value == ""
        await pilot.press("tab")
        assert app.focused is app.view
    sid = app.recorder.session_id
    again = resume(store, sid, lm=tiny_qwen35)
    app2 = HeedfulApp(again, store=store, recorder=again.recorder, show_speed=False, export_dir=tmp_path)
    async with app2.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        prompt = app2.query_one("#prompt")
        assert app2.focused is app2.view
        await pilot.press("h", "right", "space")  # keys for the text, not typed into the prompt
        await pilot.pause()
        assert prompt.value == "" and app2.view.heat_on and again.pins() == [(1, 2)]
        # a new (empty) session from the palette: the prompt box; reopening the first: the text
        app2.new_session()
        await pilot.pause()
        assert app2.focused is prompt
        app2.open_session(sid)
        await pilot.pause()
        assert app2.focused is app2.view


async def test_esc_in_the_prompt_stops_a_stream_first(tiny_qwen35, store, tmp_path):
    app = chat_app(tiny_qwen35, store, tmp_path, chunk=200_000, window=64, budget=128, ignore_eos=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"Alice met Bob.", "enter")
        await pilot.press("tab", *"Carol")
        prompt = app.query_one("#prompt")
        assert app.focused is prompt
        await pilot.press("escape")  # stops the stream, stays in the prompt box
        await settle(app, pilot)
        assert not app.generating and app.focused is prompt and prompt.value == "Carol"
        await pilot.press("escape")
        assert app.focused is app.view
