"""Wrapping in the token view: at word boundaries, incrementally."""

from __future__ import annotations

import pytest

from heedful.selector.session import Session, SessionConfig
from heedful.tui.app import HeedfulApp

pytestmark = pytest.mark.anyio

LONG = "Gatedattentionmultipliestheoutputbyasigmoidgate"  # longer than the view is wide
TEXT = ("The vault code is 4821. Remember it. Alice met Bob at the station at noon. The quick brown fox "
        f"jumps over the lazy dog. {LONG} follows. A filler sentence follows another filler sentence. "
        "Numbers: 0 1 2 3 4 5 6 7 8 9. The capital of France is Paris.\nWhat is the vault code?")


def _rows(view) -> list[str]:
    return ["".join(piece for _, piece in line) for line in view.lines]


def _check_breaks(view) -> None:
    rows, width = _rows(view), view._width
    assert all(len(r) <= width for r in rows)
    for k in range(len(rows) - 1):
        before, after = rows[k], rows[k + 1]
        first = view.lines[k + 1][0] if view.lines[k + 1] else None
        if not before or not after or first[1] == "" or before[-1].isspace() or after[0].isspace():
            continue  # a newline, or a break at whitespace
        word = before.split()[-1] + after.split()[0]
        assert len(word) > width, f"line {k} breaks inside {word!r}: {before!r} / {after!r}"


async def test_lines_break_between_words_and_wrap_incrementally(tiny_qwen35, tmp_path):
    s = Session(tiny_qwen35.model, tiny_qwen35.tokenizer, gated=tiny_qwen35.gated,
                config=SessionConfig(window=512, budget=512))
    s.prompt(TEXT)
    app = HeedfulApp(s, show_speed=False, export_dir=tmp_path)
    async with app.run_test(size=(70, 40)) as pilot:
        await pilot.pause()
        view = app.view
        assert 20 <= view._width < len(LONG)
        _check_breaks(view)
        assert "".join(_rows(view)) == s.text().replace("\n", "")
        # new tokens are placed after the old ones: the same lines as wrapping all again
        s.prompt(" Carol arrived later with another filler sentence and the vault code.")
        app.refresh_stream()
        placed = [list(line) for line in view.lines]
        view._width = 0
        view.sync()
        assert view.lines == placed
        _check_breaks(view)
        assert "".join(_rows(view)) == s.text().replace("\n", "")
