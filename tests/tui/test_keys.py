"""Keys on the token view and the focus between the view and the prompt box."""

from __future__ import annotations

import pytest

from tests.tui.conftest import chat_app, settle

pytestmark = pytest.mark.anyio


async def test_home_end_and_arrows_move_the_token_cursor_in_a_long_stream(tiny_qwen35, store, tmp_path):
    """TokenView is a ScrollView, whose own bindings scroll on home/end/up/down once the
    stream is taller than the view; the keys must move the token cursor instead."""
    app = chat_app(tiny_qwen35, store, tmp_path, chunk=300, window=400, budget=512)
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
