"""A model with a chat template: Enter sends a user turn (Session.say), the answer ends at the
end of its turn, and the template's markup is drawn dimmed."""

from __future__ import annotations

import pytest

from tests.tui.conftest import chat_app, settle

pytestmark = pytest.mark.anyio


async def test_enter_sends_a_user_turn_and_markup_is_dimmed(tiny_chat, store, tmp_path):
    app = chat_app(tiny_chat, store, tmp_path, chunk=6)
    s = app.session
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"Remember 4721.", "enter")
        await settle(app, pilot)
        assert [t.role for t in s.turns()][:2] == ["user", "assistant"]
        user = s.turns()[0]
        assert s.text(user.start, user.end) == "Remember 4721."  # as typed, no space glued before it
        markup = [i for i, src in enumerate(s.token_sources) if src == "markup"]
        view = app.view
        strip_styles = [seg.style for y in range(min(len(view.lines), 20)) for seg in view.render_line(y)._segments]
        assert markup and any(st is not None and st.dim for st in strip_styles)
        assert not all(st is not None and st.dim for st in strip_styles)
    ops = [e["op"] for e in store.events(app.recorder.session_id)]
    assert "say" in ops and "prompt" not in ops
