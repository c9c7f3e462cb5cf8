"""Folding from the app: `f` folds the selected span into a gist, `F` unfolds.

`f` asks for the gist in a small box (GistScreen): Enter with text folds the span into that
text, Enter on an empty box lets the model write a short one, Esc cancels. The fold runs in
a thread worker (a gist the model writes takes a forward per token), through the engine
(`Session.fold`: the span's rows leave, the gist's rows stay, kept like a pin); a refused
fold (the span is not resident, overlaps a fold or a drop, the gist is not shorter, the
budget would overflow) becomes a notification. `F` lets the gist of the fold under the
cursor go and brings the text back, pinned (`Session.unfold`).

`Folding` is a controller the app holds (`app.folding`; its keys `f` and `F` call it): it
reads the app's public state (session, view) and acts through the app's public operations
(`apply`, `selected_span`, `ui`, `refresh_stream`, `notify`).
"""

from __future__ import annotations

from functools import partial

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


class Folding:
    def __init__(self, app):
        self.app = app

    def fold(self) -> None:
        """f: asks for the gist of the selected span, then folds it in a worker."""
        app = self.app
        span = app.selected_span()
        if span is None:
            return
        a, b = span
        if b - a < 2:
            app.notify("Select the span to fold first (shift + arrows, or drag the mouse), then f", severity="warning")
            return

        def folded(gist: str | None) -> None:
            if gist is None:
                return
            gist = gist.strip() or None
            if gist is None:
                app.notify(f"the model is writing a gist for [{a}, {b})…")
            app.run_worker(partial(self._fold, span, gist), thread=True, group="fold")

        app.push_screen(GistScreen(span, app.session.text(a, b)), folded)

    def _fold(self, span: tuple[int, int], gist: str | None) -> None:
        """(worker thread) The engine's fold; a gist the model writes takes a forward per token."""
        try:
            self.app.session.fold(span, gist=gist)
        except Exception as e:  # noqa: BLE001 - shown to the person; the session stays usable
            msg = str(e) if str(e).startswith("fold") else f"fold failed: {e}"
            self.app.ui(self.app.notify, msg, severity="error", timeout=8)
            return
        self.app.ui(self._folded, span)

    def _folded(self, span: tuple[int, int]) -> None:
        app = self.app
        app.refresh_stream()
        gist = next((g for a, b, g in app.session.folds() if (a, b) == span), "")
        app.view.clear_selection()
        app.view.move(span[0])
        app.notify(f"folded [{span[0]}, {span[1]}) into ⟨{gist}⟩ (F unfolds)")

    def unfold(self) -> None:
        """F: the gist of the fold under the cursor (or the selection) goes, the text comes back, pinned."""
        app, view = self.app, self.app.view
        span = view.selection()
        touched = [f for f in app.session.folds() if span and f[0] < span[1] and span[0] < f[1]]
        if not touched:
            app.notify("Nothing folded under the cursor (a fold shows as ⟨its gist⟩)", severity="warning")
            return
        if app.apply(lambda: app.session.unfold(span)):
            view.clear_selection()
            view.move(touched[0][0])
            spans = ", ".join(f"[{a}, {b})" for a, b, _ in touched)
            app.notify(f"unfolded {spans}: the text is back, pinned")
