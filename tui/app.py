"""`heedful chat`: read the stream, mark what matters, see what the model remembers.

The app is built around an existing Session (and, optionally, the store recorder it writes
to), so tests construct it with a tiny model and never load one by name. Generation runs in
a thread worker (tui/streaming.py) that pulls tokens from `Session.generate` and has the view
refreshed at most every `refresh_s` seconds: the UI keeps up with fast streams without one
repaint per token, and marks made while it streams go through the engine between two tokens.
The rest is the controllers' (sessions, folding, suggest, streaming) and the token view's,
which owns its cursor and selection keys.

The app can start before its session exists (`heedful chat`): given an `opener` in place of
a session, it paints at once with a "loading model …" line and runs the opener (which loads
the model and opens or resumes the session) in a thread worker. Meanwhile the prompt box
takes what is typed; Enter there keeps the text and sends it once the session is open. An
opener that fails ends the app; the error is `load_error` (the CLI shows it in one line,
exit 2 for a HeedfulError).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, Input, Static

from heedful.errors import HeedfulError
from heedful.tui.commands import HeedfulCommands
from heedful.tui.folding import Folding
from heedful.tui.panel import SidePanel
from heedful.tui.prompt import PromptBox
from heedful.tui.sessions import Sessions, ShowSession
from heedful.tui.suggest import Suggestions
from heedful.tui.streaming import PromptTaken, Streaming
from heedful.tui.styles import MemoryState, heat_map
from heedful.tui.token_view import TokenView


@dataclass
class Opened:
    """What an opener gives the app: the session, the recorder it writes to, and with a
    picker the callable session -> pinner (tui/suggest.py)."""

    session: object
    recorder: object = None
    picker: object = None


# the picker's actions (tui/suggest.py), hidden without one
PICKER_ACTIONS = frozenset(("accept_suggestions", "reject_suggestions", "toggle_auto_pin"))
# the app's actions on the session: refused (hidden) while the model loads, and but for stop
# (esc) while the prompt box has the focus
SESSION_ACTIONS = frozenset(("generate", "stop", "toggle_pin", "pin", "unpin", "drop", "fold", "unfold",
                             "regenerate", "heat", "export")) | PICKER_ACTIONS


class HeedfulApp(App):
    """The screen (the token view, the prompt box, the side panel), the session and its
    generating worker, and the session's marks keys. What else the keys do is a controller's
    (`sessions`, `folding`, `suggest`): each reads the app's public state (session, store,
    recorder, view, generating, export_dir) and acts through its public operations (`apply`,
    `mark`, `selected_span`, `refresh_stream`, `ui`, `notify`); a session to show instead of
    the current one comes as a `ShowSession` message."""

    TITLE = "heedful"
    CSS = """
    Screen { layout: vertical; }
    #main { height: 1fr; }
    #left { width: 1fr; }
    SidePanel { width: 38; border: round $secondary; padding: 0 1; }
    #prompt { dock: bottom; }
    #loading { height: 1; padding: 0 1; color: $warning; text-style: bold; }
    """
    COMMANDS = App.COMMANDS | {HeedfulCommands}
    BINDINGS = [
        Binding("g", "generate", "Generate"),
        Binding("escape", "stop", "Stop"),
        Binding("space", "toggle_pin", "Pin"),
        Binding("p", "pin", "Pin span", show=False),
        Binding("u", "unpin", "Unpin span", show=False),
        Binding("d", "drop", "Drop"),
        Binding("a", "accept_suggestions", "Accept"),  # the picker's keys (tui/suggest.py): only with one
        Binding("x", "reject_suggestions", "Reject"),
        Binding("A,shift+a", "toggle_auto_pin", "Auto-pin", key_display="A"),
        Binding("f", "fold", "Fold"),
        Binding("F,shift+f", "unfold", "Unfold", key_display="F"),
        Binding("r", "regenerate", "Regen"),
        Binding("h", "heat", "Heat"),
        Binding("e", "export", "Export"),
        Binding("ctrl+q", "quit", "Quit"),
    ]

    def __init__(self, session=None, *, store=None, recorder=None, chunk: int = 256, refresh_s: float = 0.04,
                 export_dir: Path | None = None, show_speed: bool = True, ignore_eos: bool = False,
                 picker=None, auto_pin: bool = False, opener=None, loading: str = "loading model …"):
        super().__init__()
        if (session is None) == (opener is None):
            raise ValueError("HeedfulApp takes a session or an opener, one of them")
        self.session = session
        self.opener, self.loading = opener, loading  # () -> Opened, run in a worker (see the docstring)
        self.load_error: BaseException | None = None
        self._send_when_open = self._quitting = False
        self.store, self.recorder = store, recorder
        self.chunk, self.refresh_s = chunk, refresh_s
        self.export_dir = Path(export_dir) if export_dir else None  # None: see export_folder()
        self.show_speed = show_speed
        self.ignore_eos = ignore_eos  # else a stream stops at the model's end-of-text token
        self.generating = False  # a stream runs (tui/streaming.py)
        self.streaming = Streaming(self)
        self.sessions, self.folding = Sessions(self), Folding(self)
        self.suggest = Suggestions(self, picker, auto_pin)  # picker: session -> pinner (tui/suggest.py), or None
        if session is not None:
            self._attach(session)

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            with Vertical(id="left"):
                if self.session is None:
                    yield Static(self.loading + " (type meanwhile: Enter sends once it is loaded)", id="loading")
                s, none = self.session, self.session is None
                yield TokenView([] if none else s.token_texts, [] if none else s.token_sources, id="tokens")
                yield PromptBox(placeholder="Type text for the model, Enter to send and generate", id="prompt")
            yield SidePanel(self.loading if self.session is None else "", id="panel")
        yield Footer()

    @property
    def view(self) -> TokenView:
        return self.query_one(TokenView)

    def on_mount(self) -> None:
        # The generation worker is Python-heavy and holds the GIL; every loop iteration of
        # the UI thread would wait up to the default 5 ms switch interval to get it back,
        # making keys sluggish while the model streams. 0.5 ms keeps input responsive.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)
        self._update_title()
        self.refresh_stream()
        self._focus_default()
        if self.is_headless:
            self.screen_change_signal.subscribe(self, self._steady_inputs)
        if self.session is None:
            self.call_after_refresh(self._open)  # the screen first, then the model

    # ------------------------------------------------------------------ opening
    def open_now(self) -> None:
        """Runs the opener and takes what it opened (any thread; the widgets are not touched)."""
        opened = self.opener()
        self.session, self.recorder = opened.session, opened.recorder
        if opened.picker is not None:
            self.suggest.picker = opened.picker
        self._attach(opened.session)

    @work(thread=True, group="open")
    def _open(self) -> None:
        try:
            self.open_now()
        except Exception as e:  # noqa: BLE001 - the CLI shows it (heedful/cli/chat.py)
            self.ui(self._open_failed, e)
            return
        self.ui(self._opened)

    def _open_failed(self, error: BaseException) -> None:
        if self._quitting:  # the person quit while it loaded: nothing to report
            return
        self.load_error = error
        self.exit(return_code=2 if isinstance(error, HeedfulError) else 1)

    def _opened(self) -> None:
        """(UI thread) The session is open: the view shows it; a prompt sent meanwhile goes now."""
        if self._quitting:
            return
        self.query_one("#loading").remove()
        self.view.show_stream(self.session.token_texts, self.session.token_sources)
        self._update_title()
        self.refresh_stream()
        self.refresh_bindings()
        box = self.query_one(PromptBox)
        if not (self.focused is box and box.value):
            self._focus_default()
        if self._send_when_open and box.value:
            self._send_when_open = False
            self._submit(box, box.value)

    def _steady_inputs(self, screen) -> None:
        """Headless (tests, benchmarks): no blinking cursors in any screen (the palette's
        input too), so the screen looks the same whenever it is captured."""
        def steady() -> None:
            for box in screen.query(Input):
                box.cursor_blink = False
        self.call_after_refresh(steady)

    def _focus_default(self) -> None:
        """The text when there is some to read and mark (a resumed session), else the prompt box."""
        if self.session is not None and len(self.session):
            self.view.focus()
        else:
            self.query_one(Input).focus()

    def refresh_stream(self) -> None:
        """Re-reads the engine's memory into the view and the panel (UI thread)."""
        if not self.is_running or not self.query(TokenView) or self.session is None:
            return
        s = self.session
        attention = s.last_attention
        retained = s.retained()
        rows = s.rows()  # (order key, kind): tokens, gist rows, summary rows
        folds = s.folds()
        heat = heat_map(attention, rows, folds) if attention else {}
        self.view.memory = MemoryState(resident=set(retained), pins=s.pins(), dropped=s.dropped(),
                                       sinks=s.config.sinks, heat=heat, folds={a: (b, g) for a, b, g in folds},
                                       **self.suggest.marks())
        self.view.sync()
        self.query_one(SidePanel).show(s, generating=self.generating, show_speed=self.show_speed, retained=retained,
                                       rows=rows, folds=folds, picker=self.suggest.status())

    # ------------------------------------------------------------------ generation
    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the prompt box: the text goes to the engine with the words marked to pin
        (ctrl+t), pinned before the prompt is processed; then the model generates."""
        box, text = event.input, event.value
        if not text or not isinstance(box, PromptBox):
            return
        if self.session is None:  # the model is loading: the text stays, and goes once it is open
            self._send_when_open = True
            self.notify("sent once the model is loaded")
            return
        self._submit(box, text)

    def _submit(self, box: PromptBox, text: str) -> None:
        if self.generating:
            self.notify("Stop the stream first (Esc) to add text", severity="warning")
            return
        chat = self.session.template is not None  # an instruct model: the text is a user turn
        if not chat and not text[0].isspace() and not self._ends_with_space():
            text = " " + text  # not glued to the last word
        pins = box.pin_targets(text)
        if self.suggest.picker is not None:  # the worker scores the prompt, then sends it (tui/suggest.py)
            self.streaming.start(self.chunk, self.suggest.pinner, (text, pins, box.marks_in(text), box.value))
            return
        send = self.session.say if chat else self.session.prompt
        if not self.apply(lambda: send(text, pin=pins) if pins else send(text)):
            return  # refused (e.g. the pins would overflow the budget): the text and marks stay
        box.value = ""
        if pins:
            self.notify(f"pinned before the prompt was read: {', '.join(box.marks_in(text))}")
        box.clear_marks()
        self.view.focus()
        self.action_generate()

    def _ends_with_space(self) -> bool:
        """Whether the stream's text is empty or ends with whitespace. A last token with no text
        yet is part of a character still being written (byte-level BPE): the stream ends
        inside it, not in a space, whatever the pieces before it end with."""
        texts = self.session.token_texts
        return not texts or texts[-1][-1:].isspace()

    def action_generate(self) -> None:
        if self.generating:
            return
        if self.session.next_logits is None:
            self.notify("Type a prompt first (i)", severity="warning")
            return
        self.streaming.start(self.chunk, self.suggest.pinner)

    def on_prompt_taken(self, message: PromptTaken) -> None:
        """The worker's prompt is in the stream (tui/streaming.py): the box is emptied."""
        box = self.query_one(PromptBox)
        if box.value == message.typed:  # (not if the person typed on meanwhile)
            box.value = ""
        box.clear_marks()
        if message.marks:
            self.notify(f"pinned before the prompt was read: {', '.join(message.marks)}")
        if self.focused is box:
            self.view.focus()
        self.refresh_stream()

    def ui(self, fn, *args, **kwargs) -> None:
        """Runs fn on the UI thread; quiet if the app has already gone (quit mid-stream)."""
        try:
            self.call_from_thread(fn, *args, **kwargs)
        except RuntimeError:
            self.streaming.stop()

    def action_stop(self) -> None:
        if self.generating:
            self.streaming.stop()

    # ------------------------------------------------------------------ marks
    def apply(self, op) -> bool:
        """Runs an engine operation; bad input becomes a notification, not a crash."""
        try:
            op()
        except HeedfulError as e:
            self.notify(str(e), severity="error", timeout=6)
            return False
        self.refresh_stream()
        return True

    def selected_span(self) -> tuple[int, int] | None:
        span = self.view.selection()
        if span is None:
            self.notify("Nothing to mark yet", severity="warning")
        return span

    def _mark_span(self, op: str) -> bool:
        """pin / unpin / drop the selected span through the engine; clears the selection
        when the engine took it."""
        span = self.selected_span()
        if span and self.apply(lambda: self.suggest.mark(op, span)):
            self.view.clear_selection()
            return True
        return False

    def action_toggle_pin(self) -> None:
        span = self.selected_span()
        if span is None:
            return
        pins = self.session.pins()
        covered = all(any(a <= t < b for a, b in pins) for t in range(*span))
        self._mark_span("unpin" if covered else "pin")
        self.view.clear_selection()

    def action_pin(self) -> None:
        self._mark_span("pin")

    def action_unpin(self) -> None:
        self._mark_span("unpin")

    def action_drop(self) -> None:
        self._mark_span("drop")

    def action_regenerate(self) -> None:
        """Cuts the stream back to the cursor and generates again from there."""
        if self.generating:
            self.notify("Stop the stream first (Esc)", severity="warning")
            return
        at = self.view.cursor
        if at <= 0:
            return
        if self.apply(lambda: self.session.rewind(at)):
            self.view.move(at - 1)
            self.action_generate()

    def action_heat(self) -> None:
        self.view.heat_on = not self.view.heat_on
        self.notify("attention heat overlay " + ("on" if self.view.heat_on else "off"))

    def recall_text(self, text: str) -> None:
        self.apply(lambda: self.session.recall(text))

    def apply_setting(self, name: str, value) -> None:
        """window / budget / temperature / top_p, through the engine (logged, replayable)."""
        if self.apply(lambda: self.session.set(**{name: value})):
            self.notify(f"{name} = {value}")
            self._update_title()

    # ------------------------------------------------------------------ the controllers' keys and commands
    def action_fold(self) -> None:
        self.folding.fold()

    def action_unfold(self) -> None:
        self.folding.unfold()

    def action_accept_suggestions(self) -> None:
        self.suggest.accept()

    def action_reject_suggestions(self) -> None:
        self.suggest.reject()

    def action_toggle_auto_pin(self) -> None:
        self.suggest.toggle_auto_pin()

    def action_export(self, fmt: str = "md") -> None:
        self.sessions.export(fmt)

    def new_session(self) -> None:
        self.sessions.new()

    def open_session(self, session_id: int) -> None:
        self.sessions.open(session_id)

    # ------------------------------------------------------------------ the session shown
    def on_show_session(self, message: ShowSession) -> None:
        """Another session in place of this one (tui/sessions.py): the view, title and focus follow."""
        if self.recorder is not None:
            self.recorder.close()
        self.session, self.recorder = message.session, message.recorder
        self._attach(message.session)
        self.view.show_stream(message.session.token_texts, message.session.token_sources)
        self._update_title()
        self.refresh_stream()
        self._focus_default()
        self.notify(message.notice)

    @staticmethod
    def _attach(session) -> None:
        """What the app reads from a session: attention weights (the heat overlay) and, for a
        gated model, its output gates (the side panel)."""
        session.collect_attention = True
        if session.gated:
            session.watch_gates()

    def _update_title(self) -> None:
        if self.session is None:
            self.sub_title = self.loading
            return
        c = self.session.config
        self.sub_title = f"{c.model} | window {c.window} | budget {c.budget}"

    # ------------------------------------------------------------------ focus
    def action_focus_prompt(self) -> None:
        self.query_one(Input).focus()

    def action_focus_stream(self) -> None:
        self.view.focus()

    def action_leave_prompt(self) -> None:
        """Esc in the prompt box: stops a running stream (the typed text stays, Enter sends
        it), else goes back to the text."""
        if self.generating:
            self.action_stop()
        else:
            self.view.focus()

    def check_action(self, action: str, parameters) -> bool | None:
        if self.session is None and action in SESSION_ACTIONS:
            return False  # the model is loading
        if isinstance(self.focused, Input) and action in SESSION_ACTIONS - {"stop"}:
            return False  # typing in the prompt must not trigger single-letter bindings
        if self.suggest.picker is None and action in PICKER_ACTIONS:
            return False  # hidden: no picker (heedful chat --picker DIR)
        return True

    async def action_quit(self) -> None:
        self._quitting = True
        await super().action_quit()

    def on_unmount(self) -> None:
        sys.setswitchinterval(self._switch_interval)
        self.streaming.stop()
        if self.recorder is not None:
            self.recorder.flush()
