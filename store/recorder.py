"""SessionRecorder: the engine's recorder (heedful.selector.recorder.Recorder) on SQLite.

- event(): every operation is committed (with every token and eviction reported before
  it) before it returns, so it is durable before the engine acts on it.
- tokens(): buffered; written when `flush_tokens` are waiting or the oldest has waited
  `flush_seconds` (a background thread covers a stream that pauses), whichever first.
- evicted(): buffered with the tokens; adjacent ranges are merged into one row.

Every write is one transaction that also stores the session's token state (state.py), so
after a crash the database holds a prefix of the stream, the events before it and a state
that matches them.

atomic=True (replay): nothing touches the database until commit(store), which writes the
whole session in one transaction; discard() forgets it. release() ends atomic mode: what
was held is written in one transaction and the recording goes on as it happens (a command
holds its resume, prompt and pins until its checks pass, so a refused command changes
nothing). A streaming recorder holds its session's claim (store/writers.py: one writer per
session) until close() or discard().
"""

from __future__ import annotations

import json
import threading
import time

from heedful.errors import HeedfulError
from heedful.store.state import StreamState

CHUNK_MIN, CHUNK_MAX = 64, 256  # tokens per search chunk (see schema.py)


class SessionRecorder:
    def __init__(self, store=None, session_id: int | None = None, *, title: str | None = None,
                 state: StreamState | None = None, next_seq: int = 0, chunk: tuple | None = None,
                 atomic: bool = False, flush_tokens: int = 512, flush_seconds: float = 1.0):
        self._store = store
        self.session_id = session_id
        self.title = title
        self.state = state or StreamState()
        self.atomic = atomic
        self.flush_tokens, self.flush_seconds = flush_tokens, flush_seconds
        self._seq = next_seq
        self._lock = threading.RLock()
        self._model: str | None = None
        self._config: dict | None = None
        # pending rows, in the order they happened
        self._rows: list[tuple] = []  # (idx, token_id, text, source, created)
        self._evictions: list[list] = []  # [start, end, reason, stream length, created]
        self._events: list[tuple] = []  # (seq, op, args json, stream length, created)
        self._recalls: list[tuple] = []
        self._oldest: float | None = None  # monotonic time of the oldest pending token
        # search chunks: the open one (start, texts, row id) and closed ones not yet written
        self._open_start, self._open_texts, self._open_id = chunk or (self.state.tokens, [], None)
        self._closed: list[tuple] = []  # (start, texts, row id or None)
        self._open_dirty = False
        self._closed_flag = False
        self._stop = threading.Event()
        self._thread = None
        self.claimed = None  # the session's claim (store/writers.py), while this records into it
        if not atomic:
            self._start_thread()

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._flush_loop, name="heedful-store-flush", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- Recorder protocol
    def event(self, op: str, args: dict) -> None:
        with self._lock:
            if op == "config":
                self._config, self._model = dict(args), args.get("model")
            elif op == "resume":
                self._config = dict(args.get("config", {})) or self._config
            elif op == "set" and self._config is not None:  # mid-session settings: resume uses them
                self._config = {**self._config, **{k: v for k, v in args.items() if k != "at"}}
            elif op == "prompt" and self.title is None:
                self.title = " ".join(str(args.get("text", "")).split())[:80]
            args_json = json.dumps(args, ensure_ascii=False)
            seq, at = self._seq, self.state.tokens
            if self.atomic and op in ("rewind", "resume"):  # both cut the stream
                self._rewind_in_memory(int(args["index" if op == "rewind" else "tokens"]))
            new = self.state.event(op, args)
            if new is not None:
                self._recalls.append((seq, args["range"][0], args["range"][1], new[0], new[1]))
            self._events.append((seq, op, args_json, at, time.time()))
            self._seq += 1
            if not self.atomic:
                self._write(rewind=int(args["index"]) if op == "rewind" else None)

    def tokens(self, records) -> None:
        if not records:
            return
        with self._lock:
            first = records[0].index
            if first != self.state.tokens:
                raise HeedfulError(f"store: token {first} reported after {self.state.tokens} tokens (a gap)")
            now = time.time()
            rows = self._rows
            for r in records:
                rows.append((r.index, r.id, r.text, r.source, now))
            self._chunk_tokens(first, records)
            self.state.tokens = first + len(records)
            if self._oldest is None:
                self._oldest = time.monotonic()
            # the flush thread enforces flush_seconds; here only the count is checked
            if len(rows) >= self.flush_tokens and not self.atomic:
                self._write()

    def evicted(self, ranges, reason: str) -> None:
        with self._lock:
            now, at = time.time(), self.state.tokens
            for a, b in ranges:
                last = self._evictions[-1] if self._evictions else None
                if last and last[1] == a and last[2] == reason:
                    last[1], last[3], last[4] = b, at, now
                else:
                    self._evictions.append([a, b, reason, at, now])
            self.state.evicted_ranges(ranges, reason)

    def flush(self) -> None:
        with self._lock:
            if not self.atomic and (self._rows or self._evictions or self._events or self._open_dirty):
                self._write()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        try:
            self.flush()
        finally:
            self._closed_flag = True
            self._unclaim()

    def release(self) -> None:
        """Ends atomic (held) mode: writes what is held in one transaction, then records as it
        happens. A no-op for a recorder that already streams."""
        with self._lock:
            if not self.atomic or self._closed_flag:
                return
            self._write()
            self.atomic = False
            if self.claimed is None and self._store is not None and self.session_id is not None:
                self.claimed = self._store.claim(self.session_id)
            self._stop.clear()
            self._start_thread()

    def _unclaim(self) -> None:
        if self.claimed is not None:
            self.claimed.release()
            self.claimed = None

    # ---------------------------------------------------------------- store-specific
    def reset_resident(self, resident: list[int]) -> None:
        """After Session.restore: the engine's resident set is the new truth."""
        with self._lock:
            self.state.reset_resident(resident)
            if not self.atomic:
                self._write()

    def commit(self, store) -> int:
        """atomic mode: writes the whole session in one transaction; returns its id."""
        with self._lock:
            self._store = store
            self._write()
            return self.session_id

    def discard(self) -> None:
        with self._lock:
            self._rows, self._evictions, self._events, self._recalls, self._closed = [], [], [], [], []
            self._open_dirty = False
            self._oldest = None
            self._unclaim()

    # ---------------------------------------------------------------- internals
    def _flush_loop(self) -> None:
        tick = min(0.2, self.flush_seconds / 4)
        while not self._stop.wait(tick):
            with self._lock:
                if self._oldest is not None and time.monotonic() - self._oldest >= self.flush_seconds:
                    try:
                        self._write()
                    except Exception:  # the next synchronous write reports it
                        pass

    def _chunk_tokens(self, first: int, records) -> None:
        """Grows the open search chunk; a chunk closes before a token that starts a word
        once it holds CHUNK_MIN tokens, or at CHUNK_MAX tokens."""
        open_texts = self._open_texts
        for k, r in enumerate(records):
            t, n = r.text, len(open_texts)
            if n >= CHUNK_MIN and (n >= CHUNK_MAX or t[:1].isspace()):
                self._closed.append((self._open_start, open_texts, self._open_id))
                self._open_start, self._open_texts, self._open_id = first + k, [], None
                open_texts = self._open_texts
            open_texts.append(t)
        self._open_dirty = True

    def _rewind_in_memory(self, index: int) -> None:
        """atomic mode: nothing is on disk yet, so a rewind just cuts the buffers."""
        if self._rows:
            del self._rows[max(0, index - self._rows[0][0]):]
        if index < self._open_start:
            while self._closed and self._closed[-1][0] >= index:
                self._closed.pop()
            # the chunk holding token index - 1 becomes the open one
            self._open_start, self._open_texts, _ = self._closed.pop() if self._closed else (index, [], None)
        del self._open_texts[index - self._open_start:]
        self._open_dirty = True

    def _rewind_on_disk(self, conn, sid: int, index: int) -> None:
        conn.execute("DELETE FROM tokens WHERE session = ? AND idx >= ?", (sid, index))
        row = conn.execute("SELECT id, start_idx FROM chunks WHERE session = ? AND start_idx < ? AND end_idx >= ?",
                           (sid, index, index)).fetchone() if index else None
        conn.execute("DELETE FROM chunks WHERE session = ? AND start_idx >= ?", (sid, index))
        if row:
            texts = [t for (t,) in conn.execute("SELECT text FROM tokens WHERE session = ? AND idx >= ? "
                                                "ORDER BY idx", (sid, row[1]))]
            self._open_start, self._open_texts, self._open_id = row[1], texts, row[0]
        else:
            self._open_start, self._open_texts, self._open_id = index, [], None
        self._open_dirty = True

    def _write(self, rewind: int | None = None) -> None:
        """Writes everything pending in one transaction (caller holds the lock)."""
        store = self._store
        if store is None:
            raise HeedfulError("store: this recording has no database to write to")
        conn = store.conn
        chunks_before = (self._open_start, list(self._open_texts), self._open_id, list(self._closed))
        with store.guard():
            conn.execute("BEGIN IMMEDIATE")
            try:
                sid = self.session_id
                now = time.time()
                if sid is None:
                    sid = conn.execute(
                        "INSERT INTO sessions (title, created, updated, model, config) VALUES (?, ?, ?, ?, ?)",
                        (self.title, now, now, self._model, json.dumps(self._config or {}, ensure_ascii=False)),
                    ).lastrowid
                if self._rows:
                    conn.executemany("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?)",
                                     [(sid, *r) for r in self._rows])
                if self._evictions:
                    conn.executemany("INSERT INTO evictions (session, start_idx, end_idx, reason, tokens, created)"
                                     " VALUES (?, ?, ?, ?, ?, ?)", [(sid, *e) for e in self._evictions])
                self._write_chunks(conn, sid)
                # events in order; a rewind (normal mode: the last one) cuts what is on disk
                for e in self._events:
                    if rewind is not None and e is self._events[-1]:
                        self._rewind_on_disk(conn, sid, rewind)
                        self._write_chunks(conn, sid)
                    conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", (sid, *e))
                if self._recalls:
                    conn.executemany("INSERT INTO recalls VALUES (?, ?, ?, ?, ?, ?)",
                                     [(sid, *r) for r in self._recalls])
                conn.execute("UPDATE sessions SET title = ?, updated = ?, model = coalesce(?, model), "
                             "config = coalesce(?, config), state = ?, tokens = ? WHERE id = ?",
                             (self.title, now, self._model,
                              json.dumps(self._config, ensure_ascii=False) if self._config else None,
                              json.dumps(self.state.to_json()), self.state.tokens, sid))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                # nothing was written: keep the chunks as they were, to write them next time
                self._open_start, self._open_texts, self._open_id, self._closed = chunks_before
                self._open_dirty = True
                raise
        self.session_id = sid
        if self.claimed is None and not self.atomic:  # a new session: its writer claims it
            self.claimed = store.claim(sid)
        self._closed = []
        self._rows, self._evictions, self._events, self._recalls = [], [], [], []
        self._oldest = None

    def _write_chunks(self, conn, sid: int) -> None:
        def put(start, texts, row_id):
            text, end = "".join(texts), start + len(texts)
            if row_id is None:
                return conn.execute("INSERT INTO chunks (session, start_idx, end_idx, text) VALUES (?, ?, ?, ?)",
                                    (sid, start, end, text)).lastrowid
            conn.execute("UPDATE chunks SET start_idx = ?, end_idx = ?, text = ? WHERE id = ?",
                         (start, end, text, row_id))
            return row_id

        for start, texts, row_id in self._closed:
            put(start, texts, row_id)
        self._closed = []  # restored by _write if the transaction fails
        if self._open_dirty:
            if self._open_texts:
                self._open_id = put(self._open_start, self._open_texts, self._open_id)
            elif self._open_id is not None:
                conn.execute("DELETE FROM chunks WHERE id = ?", (self._open_id,))
                self._open_id = None
            self._open_dirty = False
