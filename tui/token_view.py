"""The token view: the whole stream, wrapped, with a token cursor and marks.

Built on Textual's Line API (ScrollView + render_line), so only visible lines are drawn:
a session of 100k tokens costs the same to repaint as one of 100. Wrapping is kept as an
index of lines, each a list of (token index, text piece) segments, extended incrementally
as tokens arrive and rebuilt only when the width changes.

Styles say what the model remembers: pinned tokens, the window (resident), sinks, evicted
(dimmed but readable: the store has them), dropped (struck), the cursor and the selected
span; with the heat overlay on, the background of each resident token shows how much
attention the newest token gave it.

A folded span (Session.fold) is drawn as one unit, its gist between ⟨ ⟩, under the index of
its first token: the cursor moves over it in one step and a selection that reaches it takes
the whole span. Folding or unfolding wraps everything again.
"""

from __future__ import annotations

import bisect
import re

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from heedful.selector.chat import MARKUP
from heedful.tui.styles import STYLES, MemoryState, component_class, component_css

WORDS = re.compile(r"\s*\S+|\s+")

class TokenView(ScrollView, can_focus=True, inherit_bindings=False):
    DEFAULT_CSS = """
    TokenView { height: 1fr; border: round $primary; padding: 0 1; }
    TokenView:focus { border: round $accent; }
    """ + component_css()
    # each kind of token (tui/styles.py: STYLES) is a component class, restyled by CSS
    COMPONENT_CLASSES = {component_class(kind) for kind in STYLES}
    # ScrollView's own bindings would take the arrows, home and end for scrolling as soon as
    # the stream is taller than the view; here those keys move the token cursor (shift
    # extends the selection), and only the page keys scroll. Tab (shown in the footer) or i
    # goes to the prompt box. The marks (space, p, d, ...) are the app's: they act on the session.
    BINDINGS = [
        Binding("tab", "app.focus_prompt", "Prompt"),
        Binding("i", "app.focus_prompt", "Prompt box", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("left", "cursor(-1)", "Token left", show=False),
        Binding("right", "cursor(1)", "Token right", show=False),
        Binding("shift+left", "cursor(-1, True)", "Select left", show=False),
        Binding("shift+right", "cursor(1, True)", "Select right", show=False),
        Binding("ctrl+left", "word(-1)", "Word left", show=False),
        Binding("ctrl+right", "word(1)", "Word right", show=False),
        Binding("ctrl+shift+left", "word(-1, True)", "Select a word left", show=False),
        Binding("ctrl+shift+right", "word(1, True)", "Select a word right", show=False),
        Binding("up", "line(-1)", "Line up", show=False),
        Binding("down", "line(1)", "Line down", show=False),
        Binding("shift+up", "line(-1, True)", "Select a line up", show=False),
        Binding("shift+down", "line(1, True)", "Select a line down", show=False),
        Binding("home", "home", "First token", show=False),
        Binding("end", "end", "Last token, follow", show=False),
    ]

    heat_on = reactive(False)  # the attention heat overlay (h): setting it repaints

    class CursorMoved(Message):
        def __init__(self, cursor: int) -> None:
            self.cursor = cursor
            super().__init__()

    def __init__(self, texts: list[str], sources: list[str] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.texts = texts  # the session's token_texts list, shared, read only here
        self.sources = sources if sources is not None else []  # token_sources, shared: markup is dimmed
        self.lines: list[list[tuple[int, str]]] = [[]]
        self._wrapped = 0  # tokens already placed in self.lines
        self._used = 0  # characters on the last line
        self._width = 0
        self._folds: dict[int, tuple[int, str]] = {}  # the folds the lines were wrapped with
        self._fold_starts: list[int] = []
        self.cursor = 0
        self.anchor: int | None = None  # selection: [min(anchor, cursor), max(...)] inclusive
        self.memory = MemoryState()
        self.follow = True
        self._dragging = False
        self._kind_styles: dict | None = None

    def show_stream(self, texts: list[str], sources: list[str] | None = None) -> None:
        """Shows another session's stream (a new or resumed session): everything is wrapped
        again and the cursor goes to the start, following the stream."""
        self.texts = texts
        self.sources = sources if sources is not None else []
        self.lines, self._wrapped, self._width = [[]], 0, 0
        self.cursor, self.anchor, self.follow = 0, None, True
        self.memory = MemoryState()

    def clear_selection(self) -> None:
        self.anchor = None

    # ------------------------------------------------------------------ wrapping
    def _wrap_width(self) -> int:
        return max(8, self.scrollable_content_region.width)

    def _units(self, start: int, end: int):
        """(index, text) of each unit of tokens [start, end): a token, or a folded span drawn
        as its gist (after the leading whitespace of its first token)."""
        texts, folds = self.texts, self._folds
        if not folds:
            yield from zip(range(start, end), texts[start:end])
            return
        i = start
        while i < end:
            fold = folds.get(i)
            if fold is None:
                yield i, texts[i]
                i += 1
            else:
                first = texts[i]
                yield i, first[: len(first) - len(first.lstrip())] + "⟨" + fold[1].replace("\n", " ") + "⟩"
                i = fold[0]

    def _place(self, start: int) -> None:
        """Places tokens start.. after the ones already placed. Lines break between words: a
        piece that does not fit goes to the next line together with the rest of its word
        already on this line (tokens often split a word), when the word fits on a line;
        a piece's leading whitespace stays at the end of the line. Only a word longer than the
        width is cut. Only the last line ever changes, so wrapping stays incremental."""
        self._used = sum(len(piece) for _, piece in self.lines[-1])
        width, end = self._width, len(self.texts)  # (the stream may grow meanwhile: the rest is next time's)
        for i, text in self._units(start, end):
            if len(text) <= width - self._used and "\n" not in text:  # the common case: it fits
                self.lines[-1].append((i, text))
                self._used += len(text)
                continue
            for j, part in enumerate(text.split("\n")):
                if j:
                    self._new_line([(i, "")])
                self._put(i, part)
        self._wrapped = end  # (a fold never ends past the stream it was read with)

    def _new_line(self, segments: list) -> None:
        self.lines.append(segments)
        self._used = sum(len(piece) for _, piece in segments)

    def _append(self, i: int, piece: str) -> None:
        line = self.lines[-1]
        if line and line[-1][0] == i and line[-1][1]:
            line[-1] = (i, line[-1][1] + piece)  # one segment per token and line
        else:
            line.append((i, piece))
        self._used += len(piece)

    def _put(self, i: int, part: str) -> None:
        if len(part) <= self._width - self._used:
            self._append(i, part)
            return
        for chunk in WORDS.findall(part):  # whitespace + one word each
            self._put_word(i, chunk)

    def _put_word(self, i: int, chunk: str) -> None:
        width = self._width
        while chunk:
            room = width - self._used
            if len(chunk) <= room:
                self._append(i, chunk)
                return
            body = chunk.lstrip()
            if body != chunk:  # leading whitespace: what fits ends this line, the word goes on
                k = min(len(chunk) - len(body), room)
                if k:
                    self._append(i, chunk[:k])
                chunk = chunk[k:]
                self._new_line([])
                continue
            tail = self._word_tail(self.lines[-1])
            if tail is not None and tail[1] + len(chunk) <= width:
                self._new_line(self._cut_tail(self.lines[-1], tail[0]))
            elif self._used and len(chunk) <= width:
                self._new_line([])
            else:  # longer than a line: cut
                if room <= 0:
                    self._new_line([])
                    room = width
                self._append(i, chunk[:room])
                chunk = chunk[room:]

    def _word_tail(self, line: list) -> tuple[tuple[int, int], int] | None:
        """The word the line ends with: where it starts (segment index, offset in that
        segment's piece) and its length; None when the line ends with whitespace or holds
        nothing but that word."""
        n = 0
        for k in range(len(line) - 1, -1, -1):
            piece = line[k][1]
            cut = len(piece)
            while cut and not piece[cut - 1].isspace():
                cut -= 1
            n += len(piece) - cut
            if cut:
                return ((k, cut), n) if 0 < n < self._used else None
        return None

    def _cut_tail(self, line: list, at: tuple[int, int]) -> list:
        """Removes the segments from `at` (segment index, offset in its piece) on from the line
        and returns them, for the next line."""
        k, off = at
        t, piece = line[k]
        moved = ([(t, piece[off:])] if piece[off:] else []) + line[k + 1:]
        del line[k:]
        if piece[:off]:
            line.append((t, piece[:off]))
        self._used -= sum(len(p) for _, p in moved)
        return moved

    def sync(self) -> None:
        """Wraps new tokens (or everything, after a resize, a rewind, a fold or an unfold)."""
        width = self._wrap_width()
        folds = self.memory.folds
        if width != self._width or self._wrapped > len(self.texts) or folds != self._folds:
            self._width, self.lines, self._wrapped = width, [[]], 0
            self._folds, self._fold_starts = dict(folds), sorted(folds)
        if self._wrapped < len(self.texts):
            # re-place the last line's tokens: a token that grew (never) or new ones
            self._place(self._wrapped)
        self.virtual_size = Size(self._width, len(self.lines))
        self.cursor = self.unit_start(min(self.cursor, max(0, len(self.texts) - 1)))
        if self.anchor is not None:
            self.anchor = self.unit_start(min(self.anchor, max(0, len(self.texts) - 1)))
        if self.follow:
            self.scroll_end(animate=False, immediate=True)
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        self.sync()

    # ------------------------------------------------------------------ rendering
    def selection(self) -> tuple[int, int] | None:
        """[start, end) of the selected span (the cursor alone if nothing is selected)."""
        if not self.texts:
            return None
        a = self.cursor if self.anchor is None else self.anchor
        lo, hi = min(a, self.cursor), max(a, self.cursor)
        return self.unit_start(lo), self.unit_end(hi)

    def kind_styles(self) -> dict:
        """Kind -> the Rich style of its component class (the CSS in force), kept until the styles change."""
        if self._kind_styles is None:
            self._kind_styles = {k: self.get_component_rich_style(component_class(k), partial=True) for k in STYLES}
        return self._kind_styles

    def notify_style_update(self) -> None:
        self._kind_styles = None
        super().notify_style_update()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        n = y + scroll_y
        if n >= len(self.lines):
            return Strip.blank(self.size.width)
        sel = self.selection() if self.anchor is not None else None
        styles = self.kind_styles()
        segs = []
        for t, piece in self.lines[n]:
            text = piece if piece else (" " if t == self.cursor and not any(p for _, p in self.lines[n]) else "")
            if not text and t != self.cursor:
                continue
            kind = self.memory.kind(t)
            style = styles[kind]
            if t < len(self.sources) and self.sources[t] == MARKUP:  # a chat template's role headers
                style = style + styles["markup"]
            if self.heat_on and t in self.memory.heat:
                w = min(1.0, self.memory.heat[t])
                style = style + Style(bgcolor=f"rgb({int(40 + 215 * w)},{int(40 * (1 - w))},{int(40 * (1 - w))})")
            if sel and sel[0] <= t < sel[1]:
                style = style + styles["selected_pinned" if kind in ("pinned", "autopinned") else "selected"]
            if t == self.cursor and self.has_focus:
                style = style + styles["cursor"]
            segs.append(Segment(text or " ", style))
        strip = Strip(segs)
        return strip.crop(scroll_x, scroll_x + self.size.width)

    # ------------------------------------------------------------------ cursor
    def fold_at(self, t: int) -> tuple[int, int] | None:
        """The folded span [a, b) drawn as one unit that holds token t, if any."""
        k = bisect.bisect_right(self._fold_starts, t) - 1
        if k >= 0:
            a = self._fold_starts[k]
            if t < self._folds[a][0]:
                return a, self._folds[a][0]
        return None

    def unit_start(self, t: int) -> int:
        fold = self.fold_at(t) if self._folds else None
        return t if fold is None else fold[0]

    def unit_end(self, t: int) -> int:
        fold = self.fold_at(t) if self._folds else None
        return t + 1 if fold is None else fold[1]

    def step(self, t: int, direction: int) -> int:
        """The unit after (direction 1) or before (-1) the one at t; a folded span is one unit."""
        return self.unit_end(t) if direction > 0 else self.unit_start(t - 1) if t > 0 else -1

    def _line_of(self, t: int) -> int:
        lo, hi = 0, len(self.lines) - 1
        while lo < hi:  # last line whose first token <= t
            mid = (lo + hi + 1) // 2
            first = next((i for i, _ in self.lines[mid]), None)
            if first is None or first <= t:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def move(self, t: int, extend: bool = False) -> None:
        if not self.texts:
            return
        t = self.unit_start(max(0, min(t, len(self.texts) - 1)))
        if extend and self.anchor is None:
            self.anchor = self.cursor
        elif not extend:
            self.anchor = None
        self.cursor = t
        line = self._line_of(t)
        self.scroll_to_region_line(line)
        self.post_message(self.CursorMoved(t))
        self.refresh()

    def scroll_to_region_line(self, line: int) -> None:
        top, height = self.scroll_offset.y, self.scrollable_content_region.height
        if line < top:
            self.scroll_to(y=line, animate=False, immediate=True)
        elif line >= top + height:
            self.scroll_to(y=line - height + 1, animate=False, immediate=True)
        self.follow = self.scroll_offset.y >= self.max_scroll_y

    def action_cursor(self, step: int, extend: bool = False) -> None:
        self.move(self.step(self.cursor, step), extend)

    def action_word(self, direction: int, extend: bool = False) -> None:
        self.move(self.word_step(direction), extend)

    def action_line(self, direction: int, extend: bool = False) -> None:
        self.move(self.line_step(direction), extend)

    def action_home(self) -> None:
        self.move(0)

    def action_end(self) -> None:
        self.move(len(self.texts) - 1)
        self.follow = True

    def word_step(self, direction: int) -> int:
        """Next (or previous) token that starts a word: its text begins with whitespace."""
        t = self.step(self.cursor, direction)
        while 0 < t < len(self.texts) - 1 and not self.texts[t][:1].isspace():
            t = self.step(t, direction)
        return t

    def line_step(self, direction: int) -> int:
        line = self._line_of(self.cursor) + direction
        if not 0 <= line < len(self.lines):
            return self.cursor
        col = 0
        for t, piece in self.lines[self._line_of(self.cursor)]:
            if t == self.cursor:
                break
            col += len(piece)
        used = 0
        for t, piece in self.lines[line]:
            used += len(piece)
            if used > col:
                return t
        return self.lines[line][-1][0] if self.lines[line] else self.cursor

    def token_at(self, x: int, y: int) -> int | None:
        """The token at content coordinates (x, y) of the visible area."""
        n = y + self.scroll_offset.y
        if not 0 <= n < len(self.lines) or not self.lines[n]:
            return None
        col = x + self.scroll_offset.x
        used = 0
        for t, piece in self.lines[n]:
            used += len(piece)
            if col < used:
                return t
        return self.lines[n][-1][0]

    # ------------------------------------------------------------------ mouse
    def _event_token(self, event: events.MouseEvent) -> int | None:
        at = event.get_content_offset(self)
        return None if at is None else self.token_at(at.x, at.y)

    def on_mouse_down(self, event: events.MouseDown) -> None:
        t = self._event_token(event)
        if t is None:
            return
        self.focus()
        self.anchor = None
        self.move(t)
        self.anchor = t
        self._dragging = True
        self.capture_mouse()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self._dragging:
            t = self._event_token(event)
            if t is not None and t != self.cursor:
                self.cursor = t
                self.refresh()

    def on_mouse_up(self, event: events.MouseUp) -> None:
        if self._dragging:
            self._dragging = False
            self.release_mouse()
            if self.anchor == self.cursor:
                self.anchor = None
            self.refresh()

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self.follow = new >= self.max_scroll_y
