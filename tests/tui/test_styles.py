"""The styles docs/tui.md states are the ones the code uses and the screen shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.style import Style

from heedful.selector.session import Session, SessionConfig
from heedful.tui.app import HeedfulApp
from heedful.tui.styles import STYLES

pytestmark = pytest.mark.anyio

DOC = Path(__file__).resolve().parents[2] / "docs" / "tui.md"
ROWS = {  # how the doc's table starts each row -> the style's name in the code
    "pinned": "pinned", "in the live window": "window", "a sink": "sink", "evicted": "evicted",
    "dropped": "dropped", "the selected span": "selected", "a pinned token in the selected span": "selected_pinned",
    "folded": "folded", "auto-pinned": "autopinned", "suggested by": "suggested",
    "suggested, evicted": "suggested_evicted",
}


def _doc_styles() -> dict[str, list[str]]:
    section = DOC.read_text().split("## What the styles mean", 1)[1].split("\n## ", 1)[0]
    found = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2:
            continue
        name = max((k for k in ROWS if cells[0].startswith(k)), key=len, default=None)
        if name:
            found[ROWS[name]] = re.findall(r"#[0-9a-f]{6}", cells[1])
    return found


def _code_colours(style) -> list[str]:
    return [c.get_truecolor().hex for c in (style.color, style.bgcolor) if c is not None]


def test_the_doc_states_the_colours_the_code_uses():
    doc = _doc_styles()
    assert set(doc) == set(ROWS.values())
    for name, colours in doc.items():
        assert colours == _code_colours(STYLES[name]), name
    assert STYLES["pinned"].bold and STYLES["selected_pinned"].bold and STYLES["dropped"].strike
    assert STYLES["folded"].italic
    assert STYLES["suggested"].underline and STYLES["suggested_evicted"].underline and not STYLES["autopinned"].bold


async def test_the_screen_shows_those_colours_not_the_themes(tiny_qwen35, tmp_path):
    """Named ANSI colours (yellow, blue) are repainted by Textual's theme (orange, purple):
    the screen must show the doc's colours."""
    s = Session(tiny_qwen35.model, tiny_qwen35.tokenizer, gated=tiny_qwen35.gated,
                config=SessionConfig(window=16, budget=64))
    s.prompt("The vault code is 4821. Remember it. Alice met Bob at the station at noon. A filler sentence.")
    s.pin((len(s) - 6, len(s) - 4))
    s.drop((len(s) - 3, len(s) - 2))
    s.fold((len(s) - 12, len(s) - 8), gist="A")
    app = HeedfulApp(s, show_speed=False, export_dir=tmp_path)
    async with app.run_test(size=(110, 30)) as pilot:
        await pilot.pause()
        app.view.move(len(s) - 8)
        app.view.move(len(s) - 6, extend=True)  # over window tokens and one of the two pinned
        await pilot.pause()
        svg = app.export_screenshot().lower()
    for name in ("pinned", "window", "evicted", "dropped", "selected", "selected_pinned", "folded"):
        for colour in _code_colours(STYLES[name]):
            assert colour in svg, (name, colour)


async def test_each_kind_is_a_component_class_that_css_can_restyle(tmp_path):
    """The view draws each kind with its component class's style: STYLES by default, another
    where an app's CSS says so (Textual's habit, as Input's classes)."""
    from heedful.bench.tui import SyntheticSession
    from heedful.tui.styles import component_class

    class Restyled(HeedfulApp):
        CSS = HeedfulApp.CSS + "TokenView > .token-view--pinned { background: #00ff00; }"

    for app_class, pinned in ((HeedfulApp, STYLES["pinned"]), (Restyled, STYLES["pinned"] + Style(bgcolor="#00ff00"))):
        app = app_class(SyntheticSession(1000.0, preload=20), show_speed=False, export_dir=tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            styles = app.view.kind_styles()
            assert set(styles) == set(STYLES) and component_class("pinned") in app.view.COMPONENT_CLASSES
            assert styles["pinned"] == pinned
            assert all(styles[k] == v for k, v in STYLES.items() if k != "pinned")
