"""`heedful chat`: read the stream, mark what matters, see what the model remembers.

The app is built around an existing Session (and, optionally, the store recorder it writes
to), so tests construct it with a tiny model and never load one by name. Generation runs in
a thread worker that pulls tokens from `Session.generate` and posts a batched refresh at
most every `refresh_s` seconds: the UI keeps up with fast streams without one repaint per
token, and marks made while it streams go through the engine between two tokens.

The app can start before its session exists (`heedful chat`): given an `opener` in place of
a session, it paints at once with a "loading model …" line and runs the opener (which loads
the model and opens or resumes the session) in a thread worker. Meanwhile the prompt box
takes what is typed; Enter there keeps the text and sends it once the session is open. An
opener that fails ends the app; the error is `load_error` (the CLI shows it in one line,
exit 2 for a HeedfulError).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, Input, Static

from heedful.errors import HeedfulError
from heedful.selector.rows import RowKind
from heedful.tui.commands import HeedfulCommands
from heedful.tui.folding import FoldActions
from heedful.tui.panel import SidePanel
from heedful.tui.prompt import PromptBox
from heedful.tui.sessions import SessionActions
from heedful.tui.suggest import SuggestActions
from heedful.tui.styles import MemoryState
from heedful.tui.token_view import TokenView


@dataclass
class Opened:
    """What an opener gives the app: the session, the recorder it writes to, and with a
    picker the callable session -> pinner (tui/suggest.py)."""

    session: object
    recorder: object = None
    picker: object = None


# the actions that need an open session: refused (hidden) while the model loads
SESSION_ACTIONS = frozenset((
    "generate", "stop", "toggle_pin", "pin", "unpin", "drop", "fold", "unfold", "regenerate", "heat", "export",
    "accept_suggestions", "reject_suggestions", "toggle_auto_pin"))


class HeedfulApp(SessionActions, FoldActions, SuggestActions, App):
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
        self._send_when_open = False
        self.store, self.recorder = store, recorder
        self.chunk, self.refresh_s = chunk, refresh_s
        self.export_dir = Path(export_dir) if export_dir else None  # None: see export_folder()
        self.show_speed = show_speed
        self.ignore_eos = ignore_eos  # else a stream stops at the model's end-of-text token
        self.picker, self.auto_pin = picker, auto_pin  # session -> pinner (tui/suggest.py), or None
        self._stop = threading.Event()
        self.generating = False
        self.last_export: Path | None = None
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
            yield SidePanel(id="panel")
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
            self.picker = opened.picker
        self._attach(opened.session)

    @work(thread=True, group="open")
    def _open(self) -> None:
        try:
            self.open_now()
        except Exception as e:  # noqa: BLE001 - the CLI shows it (heedful/cli/chat.py)
            self._ui(self._open_failed, e)
            return
        self._ui(self._opened)

    def _open_failed(self, error: BaseException) -> None:
        self.load_error = error
        self.exit(return_code=2 if isinstance(error, HeedfulError) else 1)

    def _opened(self) -> None:
        """(UI thread) The session is open: the view shows it; a prompt sent meanwhile goes now."""
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
        heat = self._heat(attention, rows, folds) if attention else {}
        self.view.memory = MemoryState(resident=set(retained), pins=s.pins(), dropped=s.dropped(),
                                       sinks=s.config.sinks, heat=heat, folds={a: (b, g) for a, b, g in folds},
                                       **self._picker_marks())
        self.view.sync()
        self.query_one(SidePanel).show(s, generating=self.generating, show_speed=self.show_speed, retained=retained,
                                       rows=rows, folds=folds, picker=self._picker_status())

    @staticmethod
    def _heat(attention: dict, rows: list, folds: list) -> dict:
        """Token index -> the newest token's attention (mean over layers), relative to the most
        attended. The weights have one entry per resident row (Session.rows), gist rows
        included: a token's own row gives its heat, and a fold's gist rows together give the
        heat of the fold (drawn under its first token); summary rows show nowhere."""
        layers = list(attention.values())
        if not layers or len(layers[0]) != len(rows):
            return {}  # read while a step changed the rows: the next refresh shows it
        mean = (sum(layers) / len(layers)).tolist()
        heat = {}
        for (key, kind), w in zip(rows, mean):
            if kind is RowKind.TOKEN:
                heat[key] = w
            elif kind is RowKind.GIST:
                a = next((a for a, b, _ in folds if a <= key < b), None)
                if a is not None:
                    heat[a] = heat.get(a, 0.0) + w
        top = max(heat.values(), default=0.0) or 1.0
        return {t: w / top for t, w in heat.items()}

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
        if self.picker is not None:  # the worker scores the prompt, then sends it (tui/suggest.py)
            self._send_with_picker(box, text, pins)
            return
        send = self.session.say if chat else self.session.prompt
        if not self._apply(lambda: send(text, pin=pins) if pins else send(text)):
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
        self.generating = True
        self._stop.clear()
        self._stream(self.chunk, self.pinner)

    @work(thread=True, exclusive=True, group="generate")
    def _stream(self, n: int, pinner=None, prompt: tuple | None = None) -> None:
        """Streams n tokens; with a picker's pinner, the prompt first (tui/suggest.py: _prompt_in_worker)."""
        last = time.monotonic()
        s = self.session
        stops = set() if self.ignore_eos else set(s.config.stop_ids or ())
        try:
            if prompt is not None and not self._prompt_in_worker(pinner, *prompt):
                return
            # as `heedful generate`: the answer ends at the model's stop ids (end of text, of a turn)
            it = s.generate(n, stop_at_eos=bool(stops))
            if pinner is not None:
                pinner.start()  # its hooks, on this thread
            token = None
            for token in it:
                if pinner is not None:
                    pinner.token(s, token)
                time.sleep(0)  # hand the GIL to the UI thread between two tokens
                if self._stop.is_set():
                    it.close()
                    break
                now = time.monotonic()
                if now - last >= self.refresh_s:
                    last = now
                    self._ui(self.refresh_stream)
            else:
                if token is not None and token.id in stops and s.template is None:
                    self._ui(self.notify, f"the model wrote end of text ({token.text}) and stopped: "
                             "g continues past it", timeout=6)
        except Exception as e:  # noqa: BLE001 - shown to the person; the session stays usable
            self._ui(self.notify, f"generation failed: {e}", severity="error", timeout=8)
        finally:
            if pinner is not None:
                self._end_stream(pinner)
            self.generating = False
            self._ui(self.refresh_stream)

    def _ui(self, fn, *args, **kwargs) -> None:
        """Runs fn on the UI thread; quiet if the app has already gone (quit mid-stream)."""
        try:
            self.call_from_thread(fn, *args, **kwargs)
        except RuntimeError:
            self._stop.set()

    def action_stop(self) -> None:
        if self.generating:
            self._stop.set()

    # ------------------------------------------------------------------ marks
    def _apply(self, op) -> bool:
        """Runs an engine operation; bad input becomes a notification, not a crash."""
        try:
            op()
        except HeedfulError as e:
            self.notify(str(e), severity="error", timeout=6)
            return False
        self.refresh_stream()
        return True

    def _span(self) -> tuple[int, int] | None:
        span = self.view.selection()
        if span is None:
            self.notify("Nothing to mark yet", severity="warning")
        return span

    def _mark_span(self, op: str) -> bool:
        """pin / unpin / drop the selected span through the engine; clears the selection
        when the engine took it."""
        span = self._span()
        if span and self._apply(lambda: self._mark(op, span)):
            self.view.clear_selection()
            return True
        return False

    def action_toggle_pin(self) -> None:
        span = self._span()
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
        if self._apply(lambda: self.session.rewind(at)):
            self.view.move(at - 1)
            self.action_generate()

    def action_heat(self) -> None:
        self.view.heat_on = not self.view.heat_on
        self.view.refresh()
        self.notify("attention heat overlay " + ("on" if self.view.heat_on else "off"))

    def recall_text(self, text: str) -> None:
        self._apply(lambda: self.session.recall(text))

    def apply_setting(self, name: str, value) -> None:
        """window / budget / temperature / top_p, through the engine (logged, replayable)."""
        if self._apply(lambda: self.session.set(**{name: value})):
            self.notify(f"{name} = {value}")
            self._update_title()

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
        # typing in the prompt must not trigger single-letter bindings
        if isinstance(self.focused, Input) and action in (
                "generate", "toggle_pin", "pin", "unpin", "drop", "fold", "unfold", "regenerate", "heat", "export",
                "accept_suggestions", "reject_suggestions", "toggle_auto_pin"):
            return False
        if self.picker is None and action in ("accept_suggestions", "reject_suggestions", "toggle_auto_pin"):
            return False  # hidden: no picker (heedful chat --picker DIR)
        return True

    def on_unmount(self) -> None:
        sys.setswitchinterval(self._switch_interval)
        self._stop.set()
        if self.recorder is not None:
            self.recorder.flush()
