"""Folding from the app: `f` folds the selected span into a gist, `F` unfolds.

`f` asks for the gist in a small box (GistScreen): Enter with text folds the span into that
text, Enter on an empty box lets the model write a short one, Esc cancels. The fold runs in
a thread worker (a gist the model writes takes a forward per token), through the engine
(`Session.fold`: the span's rows leave, the gist's rows stay, kept like a pin); a refused
fold (the span is not resident, overlaps a fold or a drop, the gist is not shorter, the
budget would overflow) becomes a notification. `F` lets the gist of the fold under the
cursor go and brings the text back, pinned (`Session.unfold`).

A mixin of HeedfulApp (it uses the app's session, view, notify, _span, _ui, refresh_stream).
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class GistScreen(ModalScreen[str | None]):
    """Asks for the gist of a span: its text (or "" for one the model writes), None if cancelled."""

    DEFAULT_CSS = """
    GistScreen { align: center middle; }
    #gist-box { width: 72; height: auto; border: round $accent; padding: 0 1; background: $surface; }
    #gist-box .hint { color: $text-muted; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, span: tuple[int, int], text: str):
        super().__init__()
        self.span, self.text = span, text

    def compose(self) -> ComposeResult:
        a, b = self.span
        snippet = self.text.strip().replace("\n", "⏎")
        if len(snippet) > 64:
            snippet = snippet[:30] + " … " + snippet[-30:]
        with Vertical(id="gist-box"):
            yield Static(f"Fold tokens [{a}, {b}) ({b - a}): {snippet}")
            yield Input(placeholder="its gist, shorter than the span", id="gist")
            yield Static("Enter folds · empty: the model writes the gist · Esc cancels", classes="hint")

    def on_mount(self) -> None:
        box = self.query_one(Input)
        if self.app.is_headless:
            box.cursor_blink = False
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()  # not the app's prompt
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class FoldActions:
    def action_fold(self) -> None:
        span = self._span()
        if span is None:
            return
        a, b = span
        if b - a < 2:
            self.notify("Select the span to fold first (shift + arrows, or drag the mouse), then f",
                        severity="warning")
            return

        def folded(gist: str | None) -> None:
            if gist is None:
                return
            gist = gist.strip() or None
            if gist is None:
                self.notify(f"the model is writing a gist for [{a}, {b})…")
            self._fold(span, gist)

        self.push_screen(GistScreen(span, self.session.text(a, b)), folded)

    @work(thread=True, group="fold")
    def _fold(self, span: tuple[int, int], gist: str | None) -> None:
        try:
            self.session.fold(span, gist=gist)
        except Exception as e:  # noqa: BLE001 - shown to the person; the session stays usable
            msg = str(e) if str(e).startswith("fold") else f"fold failed: {e}"
            self._ui(self.notify, msg, severity="error", timeout=8)
            return
        self._ui(self._folded, span)

    def _folded(self, span: tuple[int, int]) -> None:
        self.refresh_stream()
        gist = next((g for a, b, g in self.session.folds() if (a, b) == span), "")
        self.view.clear_selection()
        self.view.move(span[0])
        self.notify(f"folded [{span[0]}, {span[1]}) into ⟨{gist}⟩ (F unfolds)")

    def action_unfold(self) -> None:
        view = self.view
        span = view.selection()
        touched = [f for f in self.session.folds() if span and f[0] < span[1] and span[0] < f[1]]
        if not touched:
            self.notify("Nothing folded under the cursor (a fold shows as ⟨its gist⟩)", severity="warning")
            return
        if self._apply(lambda: self.session.unfold(span)):
            view.clear_selection()
            view.move(touched[0][0])
            spans = ", ".join(f"[{a}, {b})" for a, b, _ in touched)
            self.notify(f"unfolded {spans}: the text is back, pinned")
