"""Store: one heedful database. Opens it, starts recordings, and reads sessions back."""

from __future__ import annotations

import array
import contextlib
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from heedful.errors import HeedfulError
from heedful.store.db import connect, default_db_path, sqlite_errors
from heedful.store.recorder import SessionRecorder
from heedful.store.state import StreamState, json_object, load_state

SOURCES = ("prompt", "generated", "recalled", "system", "user", "markup")  # tokens.source (chat turns: selector/chat.py)


def _well_typed(ids: list, texts: list, sources: list) -> bool:
    """Whole-number ids, str texts, known sources (C loops: ~40 ms for a million tokens)."""
    try:
        array.array("q", ids)
        "".join(texts)
    except (TypeError, OverflowError):
        return False
    return set(sources) <= set(SOURCES)


@dataclass
class SessionInfo:
    id: int
    title: str | None
    created: float
    updated: float
    model: str | None
    config: dict
    tokens: int
    events: int
    state: StreamState

    def to_json(self) -> dict:
        s = self.state
        return {"id": self.id, "title": self.title, "created": self.created, "updated": self.updated,
                "model": self.model, "tokens": self.tokens, "events": self.events,
                "pinned": s.pins.total(), "evicted": s.evicted.total(), "dropped": s.dropped.total()}


@dataclass
class SessionData:
    """Everything Session.restore needs."""
    info: SessionInfo
    token_ids: list[int]
    token_texts: list[str]
    token_sources: list[str]


class Store:
    def __init__(self, db, path: Path, uri: str | None = None, readonly: bool = False, created: bool = False):
        self.db, self.path = db, path
        self.created = created  # this open made the file: close() removes it if no session landed
        self.uri = uri or str(path)  # the file: URI SQLite opened
        self.readonly = readonly
        self.conn = db.conn
        # One connection serves the readers and every recorder (and their flush threads):
        # the lock keeps their transactions apart.
        self.lock = threading.RLock()

    @classmethod
    def open(cls, path=None, *, create: bool = True, readonly: bool = False, keep_empty: bool = True) -> "Store":
        """Opens a store for recording (created when missing, unless create=False), or with
        readonly=True for reading only: nothing is created, switched or migrated, and a
        database in a read-only file or folder can be read. keep_empty=False (a command's
        store): a file this open created is removed by close() if no session landed in it."""
        path = Path(path) if path is not None else default_db_path()
        created = not readonly and not keep_empty and not os.path.lexists(path)
        db, uri = connect(path, create, readonly)
        return cls(db, path, uri, readonly, created)

    def _writable(self) -> None:
        if self.readonly:
            raise HeedfulError(f"{self.path}: opened read-only: cannot record into it")

    @contextlib.contextmanager
    def guard(self):
        """Holds the connection and turns SQLite errors into a one-line HeedfulError."""
        with self.lock, sqlite_errors(self.path):
            yield

    def close(self) -> None:
        with self.lock:
            gone = self.created and self._empty_and_alone()
            self.conn.close()
            if gone:  # a command that failed (or recorded nothing) leaves no new file behind
                for suffix in ("", "-wal", "-shm", "-journal"):
                    with contextlib.suppress(OSError):
                        os.unlink(f"{self.path}{suffix}")

    def _empty_and_alone(self) -> bool:
        """No session in the store, and no other connection to it: leaving WAL mode needs
        the database to itself, so it fails (at once) while another process has it open."""
        try:
            if self.conn.in_transaction or self.conn.execute("SELECT count(*) FROM sessions").fetchone()[0]:
                return False
            self.conn.execute("PRAGMA busy_timeout = 0")
            return self.conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0].lower() == "delete"
        except sqlite3.Error:
            return False

    def claim(self, session_id: int):
        """One writer per session (store/writers.py): a claim on it, or a one-line refusal."""
        from heedful.store.writers import claim

        return claim(self.path, session_id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- recording
    def new_session(self, title: str | None = None, **opts) -> SessionRecorder:
        """A recorder for a new session; its row is created with the first event."""
        self._writable()
        return SessionRecorder(self, title=title, **opts)

    def reopen(self, session_id: int, **opts) -> SessionRecorder:
        """A recorder that continues a stored session (resume)."""
        self._writable()
        held = self.claim(self.session(session_id).id)
        try:  # read after the claim: what the last writer left
            rec = self._reopen(self.session(session_id), **opts)
        except BaseException:
            held.release()
            raise
        rec.claimed = held
        return rec

    def _reopen(self, info: SessionInfo, **opts) -> SessionRecorder:
        session_id = info.id
        with self.guard():
            seq = self.conn.execute("SELECT coalesce(max(seq) + 1, 0) FROM events WHERE session = ?",
                                    (session_id,)).fetchone()[0]
            row = self.conn.execute("SELECT id, start_idx FROM chunks WHERE session = ? ORDER BY start_idx DESC "
                                    "LIMIT 1", (session_id,)).fetchone()
            chunk = (info.tokens, [], None)
            if row:
                texts = [t for (t,) in self.conn.execute(
                    "SELECT text FROM tokens WHERE session = ? AND idx >= ? ORDER BY idx", (session_id, row[1]))]
                chunk = (row[1], texts, row[0])
        rec = SessionRecorder(self, session_id, title=info.title, state=info.state, next_seq=seq, chunk=chunk, **opts)
        rec._config, rec._model = info.config, info.model
        return rec

    # ---------------------------------------------------------------- reading
    def _info(self, row) -> SessionInfo:
        """A sessions row, checked: a hand-edited one is a one-line HeedfulError that names
        the database, the session and what is wrong."""
        sid, title, created, updated, model, config, state, tokens, events, lo, hi = row
        where = f"{self.path}: session {sid}"
        for name, value in (("created", created), ("updated", updated)):
            if type(value) not in (int, float):
                raise HeedfulError(f"{where}: column {name} holds {value!r:.40}, not a time in seconds")
        if model is not None and not isinstance(model, str):
            raise HeedfulError(f"{where}: column model holds {model!r:.40}, not a model name")
        if tokens and (lo, hi) != (0, tokens - 1):
            self._gap_error(where, sid, lo, hi)
        cfg = json_object(config, f"{where}: column config")
        # clipped: a recall's pins are stored with its event, before its tokens are written
        st = load_state(state, where).clipped(tokens)
        return SessionInfo(sid, title, created, updated, model, cfg, tokens, events, st)

    def _gap_error(self, where: str, sid: int, lo, hi) -> None:
        """Tokens must be 0 .. n-1 with none missing (the recorder writes a prefix)."""
        for v in (lo, hi):
            if type(v) is not int or v < 0:
                raise HeedfulError(f"{where}: a token index is {v!r:.40}, not a whole number")
        with self.guard():
            gaps = self.conn.execute(
                "SELECT prev + 1, idx FROM (SELECT idx, lag(idx, 1, -1) OVER (ORDER BY idx) AS prev FROM tokens "
                "WHERE session = ?) WHERE idx > prev + 1 LIMIT 4", (sid,)).fetchall()
        spans = ", ".join(f"[{a}, {b})" for a, b in gaps[:3]) + (", ..." if len(gaps) > 3 else "")
        raise HeedfulError(f"{where}: tokens {spans} are missing from a stream of "
                           f"{hi + 1} (a hand-edited or damaged database)")

    def _bad_token(self, sid: int) -> None:
        """Raises for the first token row whose columns do not hold what the recorder writes."""
        row = self.conn.execute(
            "SELECT idx, token_id, text, source FROM tokens WHERE session = ? AND (typeof(token_id) != 'integer' "
            f"OR typeof(text) != 'text' OR typeof(source) != 'text' OR source NOT IN ({', '.join('?' * len(SOURCES))})) "
            "ORDER BY idx LIMIT 1",
            (sid, *SOURCES)).fetchone()
        where = f"{self.path}: session {sid}"
        if row is None:
            raise HeedfulError(f"{where}: its tokens changed while they were read; try again")
        idx, tid, text, src = row
        if type(tid) is not int:
            what = f"token_id holds {tid!r:.40}, not a token id"
        elif type(text) is not str:
            what = f"text holds {text!r:.40}, not text"
        else:
            what = f"source holds {src!r:.40}, not one of {', '.join(SOURCES)}"
        raise HeedfulError(f"{where}: token {idx}: {what}")

    _SESSION_SQL = ("SELECT s.id, s.title, s.created, s.updated, s.model, s.config, s.state, "
                    "(SELECT count(*) FROM tokens t WHERE t.session = s.id), "
                    "(SELECT count(*) FROM events e WHERE e.session = s.id), "
                    "(SELECT min(idx) FROM tokens t WHERE t.session = s.id), "
                    "(SELECT max(idx) FROM tokens t WHERE t.session = s.id) FROM sessions s")

    def sessions(self) -> list[SessionInfo]:
        with self.guard():
            return [self._info(r) for r in self.conn.execute(self._SESSION_SQL + " ORDER BY s.id").fetchall()]

    def session(self, session_id: int | None = None) -> SessionInfo:
        """One session; None means the most recent one."""
        with self.guard():
            if session_id is None:
                row = self.conn.execute(self._SESSION_SQL + " ORDER BY s.id DESC LIMIT 1").fetchone()
                if row is None:
                    raise HeedfulError(f"{self.path}: no sessions yet")
            else:  # an id past SQLite's integers is no session (not an OverflowError)
                fits = type(session_id) is int and -2**63 <= session_id < 2**63
                row = self.conn.execute(self._SESSION_SQL + " WHERE s.id = ?", (session_id,)).fetchone() if fits \
                    else None
                if row is None:
                    raise HeedfulError(f"--session {session_id}: no such session in {self.path}")
        return self._info(row)

    def load(self, session_id: int | None = None) -> SessionData:
        info = self.session(session_id)
        with self.guard():
            # One JSON array per column, built by SQLite and parsed by the json module: about
            # four times faster than a million row tuples. One read transaction: consistent.
            self.conn.execute("BEGIN")
            try:
                ids, texts, sources = (json.loads(self.conn.execute(
                    f"SELECT json_group_array({col}) FROM (SELECT {col} FROM tokens WHERE session = ? "
                    "ORDER BY idx)", (info.id,)).fetchone()[0]) for col in ("token_id", "text", "source"))
                if not _well_typed(ids, texts, sources):
                    self._bad_token(info.id)
            except sqlite3.OperationalError as e:
                if "BLOB" in str(e):  # json_group_array refuses a blob: say which token holds it
                    self._bad_token(info.id)
                raise
            finally:
                self.conn.execute("COMMIT")
        return SessionData(info, ids, texts, sources)

    def token_rows(self, session_id: int, start: int = 0, end: int | None = None) -> list[tuple]:
        """(idx, token_id, text, source) rows in index order."""
        with self.guard():
            rows = self.conn.execute(
                "SELECT idx, token_id, text, source FROM tokens WHERE session = ? AND idx >= ? AND idx < ? "
                "ORDER BY idx", (session_id, start, end if end is not None else 2**62)).fetchall()
            if any(type(r[2]) is not str for r in rows):
                self._bad_token(session_id)
        return rows

    def events(self, session_id: int) -> list[dict]:
        """The event log as replay-script lines: {"op": ..., **args}."""
        with self.guard():
            rows = self.conn.execute("SELECT seq, op, args FROM events WHERE session = ? ORDER BY seq",
                                     (session_id,)).fetchall()
        out = []
        for seq, op, args in rows:
            where = f"{self.path}: session {session_id}: event {seq}"
            if not isinstance(op, str):
                raise HeedfulError(f"{where}: column op holds {op!r:.40}, not an operation name")
            out.append({"op": op, **json_object(args, f"{where}: column args")})
        return out

    def evictions(self, session_id: int) -> list[tuple[int, int, str]]:
        with self.guard():
            return self.conn.execute("SELECT start_idx, end_idx, reason FROM evictions WHERE session = ? "
                                     "ORDER BY id", (session_id,)).fetchall()

    def recalls(self, session_id: int) -> list[tuple[int, int, int, int]]:
        with self.guard():
            return self.conn.execute("SELECT src_start, src_end, new_start, new_end FROM recalls "
                                     "WHERE session = ? ORDER BY seq", (session_id,)).fetchall()

    def search(self, text: str, session_id: int | None = None, limit: int = 20):
        from heedful.store.search import search

        return search(self, text, session_id, limit)
