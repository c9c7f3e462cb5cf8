"""Snapshots of the main screen (pins, window, evicted text), the key help and the palette.

The stream is built from prompts only (no sampling), so the picture depends on the
tokenizer and the engine's memory, not on model numerics. Update after an intended change:
./test.sh tests/tui/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

from heedful.selector.session import Session, SessionConfig
from heedful.tui.app import HeedfulApp

TEXT = ("The vault code is 4821. Remember it. Alice met Bob at the station at noon. "
        "A filler sentence follows another filler sentence. What is the vault code?")


def _app(lm, tmp_path, fold: bool = False):
    s = Session(lm.model, lm.tokenizer, gated=lm.gated,
                config=SessionConfig(model="tiny-qwen3.5", window=24, budget=64, prefill_chunk=12))
    s.prompt("The vault code is 4821.")
    s.pin("4821")  # resident: pinned in place
    s.prompt(" Remember it. Alice met Bob at the station at noon.")
    s.pin("Remember")  # evicted by now: recalled, pinned at the end
    if fold:
        s.fold("Alice met Bob at the station at noon", gist="Alice met Bob")  # resident: folded
    s.prompt(" " + TEXT.split("noon. ")[1])
    s.drop("filler")
    app = HeedfulApp(s, show_speed=False, export_dir=tmp_path)
    return app


async def _settled(pilot) -> None:
    """Waits until the screen holds still: animations done, messages processed. (Cursors do
    not blink in a headless app: HeedfulApp._steady_inputs.)"""
    await pilot.wait_for_animation()
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


def test_main_screen(snap_compare, tiny_qwen35, tmp_path):
    async def focus(pilot):
        pilot.app.view.focus()
        await pilot.press("home", "right", "shift+right", "shift+right")  # a selected span
        await _settled(pilot)

    assert snap_compare(_app(tiny_qwen35, tmp_path), terminal_size=(110, 30), run_before=focus)


def test_fold_and_the_gist_box(snap_compare, tiny_qwen35, tmp_path):
    """A folded span drawn as its gist, the panel's fold figures, and f's gist box."""
    async def fold(pilot):
        app = pilot.app
        app.view.focus()
        n = len(app.session)
        app.view.move(n - 6)
        app.view.move(n - 1, extend=True)
        await pilot.press("f", *"the question")
        await _settled(pilot)

    assert snap_compare(_app(tiny_qwen35, tmp_path, fold=True), terminal_size=(110, 30), run_before=fold)


def test_help_panel(snap_compare, tiny_qwen35, tmp_path):
    async def show(pilot):
        pilot.app.action_show_help_panel()
        await _settled(pilot)

    assert snap_compare(_app(tiny_qwen35, tmp_path), terminal_size=(130, 30), run_before=show)


def test_palette(snap_compare, tiny_qwen35, tmp_path):
    async def palette(pilot):
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"export")
        # the palette searches in a worker: wait for the three export commands, however slow
        from textual.command import CommandList

        for _ in range(100):
            await pilot.pause(0.05)
            if pilot.app.screen.query_one(CommandList).option_count >= 3:
                break
        await _settled(pilot)

    assert snap_compare(_app(tiny_qwen35, tmp_path), terminal_size=(110, 30), run_before=palette)


class _Pinner:
    """A picker's pinner (tui/suggest.py's duck type) with fixed suggestions and auto-pins, so
    that the picture does not depend on a learned picker's numbers."""

    def __init__(self, suggested, auto):
        self.pinning, self.lock = False, threading.RLock()
        self._new, self._auto = [SimpleNamespace(start=a, end=b, score=0.9) for a, b in suggested], list(auto)

    def take_suggestions(self):
        out, self._new = self._new, []
        return out

    def owned(self):
        return list(self._auto)

    def close(self):
        pass


def test_suggestions_and_auto_pins(snap_compare, tiny_qwen35, tmp_path):
    """heedful chat --picker: suggested words (resident and evicted), an auto-pin beside the
    person's pins, the panel's picker lines and the footer's a / x / A."""
    app = _app(tiny_qwen35, tmp_path)
    s = app.session
    auto = s.pin("noon")
    words = [r for w in ("vault", "Alice", "station", "code?") for r in s.resolve(w)]
    app.suggest.picker, app.suggest.auto_pin = (lambda session: _Pinner(words, auto)), True

    async def focus(pilot):
        pilot.app.view.focus()
        pilot.app.refresh_stream()
        await _settled(pilot)

    assert snap_compare(app, terminal_size=(130, 30), run_before=focus)
