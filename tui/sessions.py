"""What the app does with whole sessions: start a new one, open a stored one, and export
the pinned context to a file (key e, the palette).

`Sessions` is a controller the app holds (`app.sessions`): it reads the app's public state
(session, store, recorder, export_dir, generating) and notifies; a session to show in place
of the current one goes to the app as a `ShowSession` message (the app swaps the view, the
title, the focus). Exports go to `export_dir` when one is given (`heedful chat --export-dir`), else to an
`exports/` folder beside the store's database, else (no store) to the data dir,
$XDG_DATA_HOME/heedful/exports (~/.local/share/heedful/exports); the folder is created.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from textual.message import Message

from heedful.errors import HeedfulError
from heedful.selector.config import SessionConfig
from heedful.spans import Spans
from heedful.store import StreamState
from heedful.store.export import export, write_tokens


def data_exports_dir() -> Path:
    """$XDG_DATA_HOME/heedful/exports, ~/.local/share/heedful/exports by default."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "heedful" / "exports"


class ShowSession(Message):
    """A session for the app to show in place of its current one (new, or resumed)."""

    def __init__(self, session, recorder, notice: str) -> None:
        self.session, self.recorder, self.notice = session, recorder, notice
        super().__init__()


class Sessions:
    def __init__(self, app):
        self.app = app
        self.last_export: Path | None = None

    def _busy(self) -> bool:
        if self.app.generating:
            self.app.notify("Stop the stream first (Esc)", severity="warning")
            return True
        return False

    # ------------------------------------------------------------------ sessions
    def new(self) -> None:
        """A fresh session with the same model and settings (recorded in the same store)."""
        if self._busy():
            return
        app, old = self.app, self.app.session
        rec = app.store.new_session() if app.store is not None else None
        fresh = type(old)(old.model, old.tokenizer, recorder=rec, gated=old.gated,
                          config=SessionConfig(**old.config.to_dict()))
        app.post_message(ShowSession(fresh, rec, "new session"))

    def open(self, session_id: int) -> None:
        """Resumes a stored session (the same model must fit it)."""
        # torch comes with these: imported on use, so that the app paints before torch loads
        from heedful.app.open import resume
        from heedful.models.loading import LoadedModel

        app = self.app
        if app.store is None:
            app.notify("no store: start with heedful chat --db FILE", severity="warning")
            return
        if self._busy():
            return
        old = app.session
        lm = LoadedModel(model=old.model, tokenizer=old.tokenizer, name=old.config.model, gated=old.gated)
        try:
            resumed = resume(app.store, session_id, lm=lm)
        except HeedfulError as e:
            app.notify(str(e), severity="error")
            return
        app.post_message(ShowSession(resumed, resumed.recorder,
                                     f"session {session_id} resumed ({len(resumed)} tokens)"))

    # ------------------------------------------------------------------ export
    def export_folder(self) -> Path:
        """Where exports go (see the module's docstring)."""
        app = self.app
        if app.export_dir is not None:
            return app.export_dir
        if app.store is not None:
            return Path(app.store.path).resolve().parent / "exports"
        return data_exports_dir()

    def _export_path(self, fmt: str) -> Path:
        folder = self.export_folder()
        folder.mkdir(parents=True, exist_ok=True)
        rec = self.app.recorder
        sid = rec.session_id if rec is not None else None
        stem = f"heedful-{'session-' + str(sid) if sid is not None else 'unrecorded'}-pinned-" \
               f"{time.strftime('%Y%m%d-%H%M%S')}"
        path, k = folder / f"{stem}.{fmt}", 1
        while path.exists():  # two exports in one second
            k += 1
            path = folder / f"{stem}-{k}.{fmt}"
        return path

    def export(self, fmt: str = "md") -> None:
        app = self.app
        try:
            path = self._export_path(fmt)
            n = self.export_pinned(path, fmt)
        except (OSError, HeedfulError) as e:
            app.notify(f"export failed: {e}", severity="error")
            return
        self.last_export = path
        spans = len(app.session.pins())
        app.notify(f"exported {n} pinned token{'s' * (n != 1)} in {spans} span{'s' * (spans != 1)} to {path}",
                   timeout=8)

    def export_pinned(self, path: Path, fmt: str) -> int:
        """Writes the pinned tokens with the store's export (from the store when the session
        is recorded in one, else from the engine's own marks); returns how many tokens."""
        app = self.app
        with open(path, "w", encoding="utf-8") as out:
            if app.store is not None and app.recorder is not None:
                app.recorder.flush()
                return export(app.store, app.recorder.session_id, "pinned", fmt, out)
            s = app.session
            state = StreamState(tokens=len(s), sinks=s.config.sinks, pins=Spans(s.pins()),
                                dropped=Spans(s.dropped()))
            return write_tokens(out, "pinned", fmt, ids=s.token_ids, texts=s.token_texts, sources=s.token_sources,
                                state=state, heading="Session (not recorded)", model=s.config.model)
