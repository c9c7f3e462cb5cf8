"""The generating worker: a thread that pulls tokens from `Session.generate` and has the UI
refreshed at most every `refresh_s` seconds (batched, never one repaint per token); marks
made meanwhile go through the engine between two tokens.

`Streaming` is a controller the app holds (`app.streaming`): `start(n, pinner, prompt)` runs
the worker, `stop()` asks it to end after the current token. It reads the app's settings
(chunk, ignore_eos, refresh_s) and session, and sets `app.generating` while it runs. With a
picker's pinner (tui/suggest.py) the worker hands it every token, and a prompt goes through
it first (scored, then processed); once the engine has taken that prompt, the app hears it as
a `PromptTaken` message (the prompt box is the app's).
"""

from __future__ import annotations

import threading
import time
from functools import partial

from textual.message import Message

from heedful.errors import HeedfulError


class PromptTaken(Message):
    """The engine took the prompt the worker sent: `typed` was the box's text, `marks` the
    words pinned before it was read."""

    def __init__(self, typed: str, marks: list) -> None:
        self.typed, self.marks = typed, marks
        super().__init__()


class Streaming:
    def __init__(self, app):
        self.app = app
        self._stop = threading.Event()

    def start(self, n: int, pinner=None, prompt: tuple | None = None) -> None:
        """Streams n tokens in a worker; prompt: (text, pins, marks, typed), sent through the pinner first."""
        self.app.generating = True
        self._stop.clear()
        self.app.run_worker(partial(self._run, n, pinner, prompt), thread=True, exclusive=True, group="generate")

    def stop(self) -> None:
        self._stop.set()

    def _run(self, n: int, pinner, prompt: tuple | None) -> None:
        app, ui = self.app, self.app.ui
        last = time.monotonic()
        s = app.session
        stops = set() if app.ignore_eos else set(s.config.stop_ids or ())
        try:
            if prompt is not None and not self._prompt(pinner, *prompt):
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
                if now - last >= app.refresh_s:
                    last = now
                    ui(app.refresh_stream)
            else:
                if token is not None and token.id in stops and s.template is None:
                    ui(app.notify, f"the model wrote end of text ({token.text}) and stopped: "
                       "g continues past it", timeout=6)
        except Exception as e:  # noqa: BLE001 - shown to the person; the session stays usable
            ui(app.notify, f"generation failed: {e}", severity="error", timeout=8)
        finally:
            if pinner is not None:
                app.suggest.end_stream(pinner, s)
            app.generating = False
            ui(app.refresh_stream)

    def _prompt(self, pinner, text: str, pins, marks: list, typed: str) -> bool:
        """(worker thread) The prompt through the pinner; False if the engine refused it."""
        app = self.app
        try:
            pinner.prompt(app.session, text, pins)
        except HeedfulError as e:  # the text and the marks stay in the box
            app.ui(app.notify, str(e), severity="error", timeout=6)
            return False
        app.ui(app.post_message, PromptTaken(typed, marks))
        return True
