"""The prompt box, where the person types, and marks words to pin before sending.

ctrl+t toggles a pin mark on the word under the box's cursor (or on the selected text). The
marked words are highlighted in the box (the pin colours) and listed on its lower border;
on Enter the app sends `session.prompt(text, pin=box.pin_targets(text))`, so the engine pins
them before it processes the prompt (they are never evicted, nothing needs re-encoding). A
marked word is pinned wherever it stands in the prompt as a whole word (selected text:
wherever it stands); a mark no longer in the text is not sent.
"""

from __future__ import annotations

import re

from rich.highlighter import Highlighter
from rich.text import Text
from textual.binding import Binding
from textual.widgets import Input

from heedful.tui.styles import STYLES

WORD = re.compile(r"\w+(?:[-'.]\w+)*")


def mark_pattern(mark: str) -> re.Pattern:
    """The mark's text, as a whole word where it starts or ends with a word character."""
    before = r"(?<!\w)" if re.match(r"\w", mark) else ""
    after = r"(?!\w)" if re.search(r"\w$", mark) else ""
    return re.compile(before + re.escape(mark) + after)


class MarkHighlighter(Highlighter):
    """Shows the marked words in the box in the pin colours."""

    def __init__(self, box: "PromptBox"):
        self.box = box

    def highlight(self, text: Text) -> None:
        for mark in self.box.marks:
            for m in mark_pattern(mark).finditer(text.plain):
                text.stylize(STYLES["pinned"], m.start(), m.end())


class PromptBox(Input):
    """The prompt box: Tab or Esc go back to the text (Esc stops a running stream first);
    ctrl+t marks the word under the cursor to be pinned when the prompt is sent."""

    BINDINGS = [
        Binding("escape", "app.leave_prompt", "Stop / back"),
        Binding("tab", "app.focus_stream", "Text"),
        Binding("ctrl+t", "mark_word", "Pin word on send"),
    ]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.marks: list[str] = []  # in the order they were marked
        self.highlighter = MarkHighlighter(self)

    def on_mount(self) -> None:
        if self.app.is_headless:
            self.cursor_blink = False  # see HeedfulApp._steady_inputs

    def word_at_cursor(self) -> str | None:
        """The selected text, else the word the cursor is in or just after."""
        sel = self.selection
        if not sel.is_empty:
            lo, hi = sorted(sel)
            return self.value[lo:hi].strip() or None
        at = self.cursor_position
        for m in WORD.finditer(self.value):
            if m.start() <= at <= m.end():
                return m.group()
        return None

    def action_mark_word(self) -> None:
        word = self.word_at_cursor()
        if word is None:
            self.app.notify("No word under the cursor to pin (ctrl+t marks the word the cursor is in)",
                            severity="warning")
            return
        if word in self.marks:
            self.marks.remove(word)
        else:
            self.marks.append(word)
        self._show_marks()

    def clear_marks(self) -> None:
        self.marks.clear()
        self._show_marks()

    def _show_marks(self) -> None:
        self.border_subtitle = ("pin on send: " + " · ".join(self.marks)) if self.marks else ""
        self.refresh()

    def marks_in(self, text: str) -> list[str]:
        """The marks found in `text`."""
        return [m for m in self.marks if mark_pattern(m).search(text)]

    def pin_targets(self, text: str) -> list[re.Pattern]:
        """The marks found in `text`, as the targets `Session.prompt(pin=...)` takes."""
        return [mark_pattern(m) for m in self.marks_in(text)]
