"""What the app does with whole sessions: start a new one, open a stored one, and export
the pinned context to a file (key e, the palette).

A mixin of HeedfulApp (it uses the app's session, store, recorder, view and notify).
Exports go to `export_dir` when one is given (`heedful chat --export-dir`), else to an
`exports/` folder beside the store's database, else (no store) to the data dir,
$XDG_DATA_HOME/heedful/exports (~/.local/share/heedful/exports); the folder is created.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from heedful.errors import HeedfulError
from heedful.spans import Spans
from heedful.store import StreamState
from heedful.store.export import export, write_tokens


def data_exports_dir() -> Path:
    """$XDG_DATA_HOME/heedful/exports, ~/.local/share/heedful/exports by default."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "heedful" / "exports"


class SessionActions:
    # ------------------------------------------------------------------ sessions
    def new_session(self) -> None:
        """A fresh session with the same model and settings (recorded in the same store)."""
        from heedful.selector.session import Session, SessionConfig

        if self.generating:
            self.notify("Stop the stream first (Esc)", severity="warning")
            return
        old = self.session
        rec = self.store.new_session() if self.store is not None else None
        fresh = Session(old.model, old.tokenizer, recorder=rec, gated=old.gated,
                        config=SessionConfig(**old.config.to_dict()))
        self._swap(fresh, rec)
        self.notify("new session")

    def open_session(self, session_id: int) -> None:
        """Resumes a stored session (the same model must fit it)."""
        from heedful.app.open import resume
        from heedful.models.loading import LoadedModel

        if self.store is None:
            self.notify("no store: start with heedful chat --db FILE", severity="warning")
            return
        if self.generating:
            self.notify("Stop the stream first (Esc)", severity="warning")
            return
        old = self.session
        lm = LoadedModel(model=old.model, tokenizer=old.tokenizer, name=old.config.model, gated=old.gated)
        try:
            resumed = resume(self.store, session_id, lm=lm)
        except HeedfulError as e:
            self.notify(str(e), severity="error")
            return
        self._swap(resumed, resumed.recorder)
        self.notify(f"session {session_id} resumed ({len(resumed)} tokens)")

    def _swap(self, session, recorder) -> None:
        if self.recorder is not None:
            self.recorder.close()
        self.session, self.recorder = session, recorder
        self._attach(session)
        self.view.show_stream(session.token_texts, session.token_sources)
        self._update_title()
        self.refresh_stream()
        self._focus_default()

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

    # ------------------------------------------------------------------ export
    def export_folder(self) -> Path:
        """Where exports go (see the module's docstring)."""
        if self.export_dir is not None:
            return self.export_dir
        path = getattr(self.store, "path", None)
        if path is not None:
            return Path(path).resolve().parent / "exports"
        return data_exports_dir()

    def _export_path(self, fmt: str) -> Path:
        folder = self.export_folder()
        folder.mkdir(parents=True, exist_ok=True)
        sid = getattr(self.recorder, "session_id", None)
        stem = f"heedful-{'session-' + str(sid) if sid is not None else 'unrecorded'}-pinned-" \
               f"{time.strftime('%Y%m%d-%H%M%S')}"
        path, k = folder / f"{stem}.{fmt}", 1
        while path.exists():  # two exports in one second
            k += 1
            path = folder / f"{stem}-{k}.{fmt}"
        return path

    def action_export(self, fmt: str = "md") -> None:
        try:
            path = self._export_path(fmt)
            n = self.export_pinned(path, fmt)
        except (OSError, HeedfulError) as e:
            self.notify(f"export failed: {e}", severity="error")
            return
        self.last_export = path
        spans = len(self.session.pins())
        self.notify(f"exported {n} pinned token{'s' * (n != 1)} in {spans} span{'s' * (spans != 1)} to {path}",
                    timeout=8)

    def export_pinned(self, path: Path, fmt: str) -> int:
        """Writes the pinned tokens with the store's export (from the store when the session
        is recorded in one, else from the engine's own marks); returns how many tokens."""
        with open(path, "w", encoding="utf-8") as out:
            if self.store is not None and self.recorder is not None:
                self.recorder.flush()
                return export(self.store, self.recorder.session_id, "pinned", fmt, out)
            s = self.session
            state = StreamState(tokens=len(s), sinks=s.config.sinks, pins=Spans(s.pins()),
                                dropped=Spans(s.dropped()))
            return write_tokens(out, "pinned", fmt, ids=s.token_ids, texts=s.token_texts, sources=s.token_sources,
                                state=state, heading="Session (not recorded)", model=s.config.model)
