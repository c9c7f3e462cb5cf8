"""Headless (tests, benchmarks), the screen holds still: no blinking cursor, so a snapshot
taken at any moment is the same picture (test_help_panel failed under load when the
screenshot caught the prompt's cursor blinked off)."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from heedful.selector.session import Session
from heedful.tui.app import HeedfulApp

pytestmark = pytest.mark.anyio


async def _same_twice(app, pilot) -> None:
    await pilot.pause()
    first = app.export_screenshot()
    for _ in range(3):  # the blink period is 0.5 s
        await pilot.pause(0.3)
        assert app.export_screenshot() == first


async def test_no_blinking_cursor_in_the_prompt_box_or_the_palette(tiny_qwen35, tmp_path):
    s = Session(tiny_qwen35.model, tiny_qwen35.tokenizer, gated=tiny_qwen35.gated)
    app = HeedfulApp(s, show_speed=False, export_dir=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        assert isinstance(app.focused, Input)  # an empty session: the prompt box, cursor on
        await _same_twice(app, pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert isinstance(app.focused, Input) and app.focused is not app.query_one("#prompt")
        await _same_twice(app, pilot)
