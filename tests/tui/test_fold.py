"""Folding from the app: f asks for a gist and folds the selection, F unfolds; a fold is drawn
as one unit, its gist between ⟨ ⟩; the heat overlay and the side panel count its rows."""

from __future__ import annotations

import re

import pytest

from heedful.tui.panel import SidePanel
from heedful.tui.styles import STYLES
from tests.tui.conftest import chat_app, settle
from tests.rows import gist_keys

pytestmark = pytest.mark.anyio

TEXT = "The vault code is 4821. Remember it. Alice met Bob at the station at noon."
SPAN = "Alice met Bob at the station at noon"


def _app(lm, store, tmp_path, **kw):
    app = chat_app(lm, store, tmp_path, **kw)
    app.session.prompt(TEXT)  # no sampling: the tokens depend on the tokenizer only
    return app


def _rows(view) -> list[str]:
    return ["".join(piece for _, piece in line) for line in view.lines]


def _figure(app, name: str) -> int:
    return int(re.search(rf"\b{name} (\d+)", str(app.query_one(SidePanel).content)).group(1))


async def _select(app, pilot, a: int, b: int) -> None:
    app.view.focus()
    app.view.move(a)
    app.view.move(b - 1, extend=True)
    await pilot.pause()


async def test_f_folds_the_selection_into_the_typed_gist_and_F_unfolds(tiny_qwen35, store, tmp_path):
    app = _app(tiny_qwen35, store, tmp_path)
    s = app.session
    ((a, b),) = s.resolve(SPAN)
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.view
        await _select(app, pilot, a, b)
        await pilot.press("f")
        await pilot.pause()
        box = app.screen.query_one("#gist")
        assert app.focused is box  # the gist box asks
        await pilot.press(*"Alice met Bob", "enter")
        await settle(app, pilot)
        assert s.folds() == [(a, b, "Alice met Bob")]
        gist_rows = gist_keys(s)
        assert gist_rows and not any(a <= t < b for t in s.retained())
        # drawn as one unit under its first token, in the fold's style
        units = [seg for line in view.lines for seg in line]
        assert (a, " ⟨Alice met Bob⟩") in units and not any(a < t < b for t, _ in units)
        assert "".join(_rows(view)) == s.text(0, a) + " ⟨Alice met Bob⟩" + s.text(b)
        assert view.memory.kind(a) == "folded"
        line = view.render_line(view._line_of(a) - view.scroll_offset.y)
        assert any(seg.text == " ⟨Alice met Bob⟩" and seg.style.italic for seg in line)
        # the cursor goes over the fold in one step, and a selection takes it whole
        assert view.cursor == a
        await pilot.press("left")
        assert view.cursor == a - 1
        await pilot.press("right")
        assert view.cursor == a
        await pilot.press("right")
        assert view.cursor == b
        await pilot.press("shift+left", "shift+left")
        assert view.selection() == (a - 1, b + 1)
        await pilot.press("right")
        assert view.cursor == a and view.selection() == (a, b)
        # the panel counts the fold and its gist rows
        assert _figure(app, "folds") == 1 and _figure(app, "gist rows") == len(gist_rows)
        assert "⟨Alice met Bob⟩" in str(app.query_one(SidePanel).content)
        # F on the fold: the gist goes, the text comes back, pinned, and is drawn again
        await pilot.press("F")
        await pilot.pause()
        assert s.folds() == [] and (a, b) in s.pins()
        assert "".join(_rows(view)) == s.text()
        assert _figure(app, "folds") == 0 and _figure(app, "gist rows") == 0
    ops = [e for e in store.events(app.recorder.session_id) if e["op"] in ("fold", "unfold")]
    assert ops == [{"op": "fold", "range": [a, b], "gist": "Alice met Bob"}, {"op": "unfold", "range": [a, b]}]


async def test_an_empty_gist_lets_the_model_write_one_and_esc_cancels(tiny_qwen35, store, tmp_path):
    app = _app(tiny_qwen35, store, tmp_path)
    s = app.session
    asked = []

    def write_gist(a, b):  # the tiny model's own gist would be noise
        asked.append((a, b))
        return "met at noon"

    s._write_gist = write_gist
    ((a, b),) = s.resolve(SPAN)
    async with app.run_test(size=(100, 30)) as pilot:
        await _select(app, pilot, a, b)
        await pilot.press("f", *"nothing", "escape")
        await settle(app, pilot)
        assert s.folds() == [] and app.focused is app.view
        await pilot.press("f", "enter")
        await settle(app, pilot)
        assert asked == [(a, b)] and s.folds() == [(a, b, "met at noon")]
        assert any("⟨met at noon⟩" in n.message for n in app._notifications)


async def test_refused_folds_and_unfolds_are_notifications(tiny_qwen35, store, tmp_path):
    app = _app(tiny_qwen35, store, tmp_path, window=8, budget=32, ignore_eos=True)
    s = app.session
    async with app.run_test(size=(100, 30)) as pilot:
        app.view.focus()
        await pilot.press("home", "f")  # one token: nothing to fold, no gist asked
        await pilot.pause()
        assert app.screen is app.default_screen and any("Select the span" in n.message for n in app._notifications)
        await _select(app, pilot, 2, 6)  # evicted by now (window 8)
        await pilot.press("f", *"code", "enter")
        await settle(app, pilot)
        assert s.folds() == [] and any("resident" in n.message for n in app._notifications)
        n = len(s)
        await _select(app, pilot, n - 4, n)  # resident, but the gist is not shorter
        await pilot.press("f", *"a much longer gist than that", "enter")
        await settle(app, pilot)
        assert s.folds() == [] and any("shorter" in n.message for n in app._notifications)
        await pilot.press("F")  # nothing folded here
        await pilot.pause()
        assert any("Nothing folded" in n.message for n in app._notifications)
        await pilot.press("g")  # still usable
        await settle(app, pilot)
        assert len(s) == n + 20


async def test_heat_overlay_maps_weights_to_tokens_with_gist_rows_resident(tiny_qwen35, store, tmp_path):
    """The attention weights have one entry per resident row, gist rows (float order keys)
    included: heat goes to the token rows and, summed, to the fold's unit."""
    app = _app(tiny_qwen35, store, tmp_path, ignore_eos=True)
    s = app.session
    ((a, b),) = s.resolve(SPAN)
    s.fold((a, b), gist="Alice met Bob")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("h", "g")
        await settle(app, pilot)
        rows = s.residency.rows.keys
        assert gist_keys(s) and len(next(iter(s.last_attention.values()))) == len(rows)
        heat = app.view.memory.heat
        assert set(heat) == set(s.retained()) | {a}
        assert max(heat.values()) == pytest.approx(1.0) and heat[a] > 0
        line = app.view.render_line(app.view._line_of(a) - app.view.scroll_offset.y)
        unit = next(seg for seg in line if "⟨" in seg.text)
        assert unit.style.bgcolor != STYLES["folded"].bgcolor  # the heat shows on the fold


async def test_fold_and_unfold_from_the_palette(tiny_qwen35, store, tmp_path):
    app = _app(tiny_qwen35, store, tmp_path)
    s = app.session
    ((a, b),) = s.resolve(SPAN)
    async with app.run_test(size=(100, 30)) as pilot:
        await _select(app, pilot, a, b)
        await pilot.press("ctrl+p", *"fold the selection")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.focused is app.screen.query_one("#gist")
        await pilot.press(*"Alice met Bob", "enter")
        await settle(app, pilot)
        assert s.folds() == [(a, b, "Alice met Bob")]
        app.view.move(a)
        await pilot.press("ctrl+p", *"unfold the gist")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert s.folds() == [] and (a, b) in s.pins()
