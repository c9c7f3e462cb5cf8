"""The server's sessions: which are live (their KV banks in memory), which conversation each
stored session holds, and the locks that keep requests apart.

- One model, shared: every forward (a turn's prefill, one generated token, a rebuild) runs
  under `compute`, a fair (first come, first served) lock with `slots` holders, so the
  streams of requests to different sessions interleave token by token.
- Requests to one session are serialized by that session's lock (`session_lock`).
- Live sessions' KV banks are counted against `max_kv_bytes` at the most each can grow to
  for its budget (`bound`: `budget` rows of keys and values, and of the rotary masters a
  bank allocates once a row is dropped, folded or evicted), so the banks' real bytes never
  pass it; a budget change reserves the new bound before the bank is reallocated. To
  make room, the least recently used idle session is released (everything it holds is in
  the store already) and rebuilt from the store on its next request (app.open.resume).
- The index maps a conversation (its messages, role and stripped content) to the stored
  session that holds exactly it, so a client that sends the whole history each time
  continues its session: the longest prefix of the request's messages found in the index.
  It is rebuilt from the store when the server starts.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import sys
import threading
import time

from heedful.errors import HeedfulError
from heedful.serve.protocol import ApiError


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text or "")
    if not m or m.group(2).lower() not in _UNITS:
        raise HeedfulError(f"--max-kv-bytes {text!r}: a size such as 512MiB, 2GiB or 100000000")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


class FairLock:
    """A semaphore of `slots` that serves waiters in arrival order (a thread that releases
    and re-acquires between two tokens cannot starve the others)."""

    def __init__(self, slots: int = 1):
        self._cond = threading.Condition()
        self._free = slots
        self._queue: collections.deque = collections.deque()

    def __enter__(self):
        me = object()
        with self._cond:
            self._queue.append(me)
            while self._queue[0] is not me or self._free == 0:
                self._cond.wait()
            self._queue.popleft()
            self._free -= 1
            self._cond.notify_all()
        return self

    def __exit__(self, *exc):
        with self._cond:
            self._free += 1
            self._cond.notify_all()


def conversation(messages) -> list[tuple[str, str]]:
    """Messages as the index compares them: role and content, surrounding spaces stripped."""
    return [(m["role"], m["content"].strip()) for m in messages]


def key_of(conv: list[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps(conv, ensure_ascii=False).encode()).hexdigest()


def session_messages(session) -> list[dict]:
    """The conversation a session's stream holds (selector/chat.py messages)."""
    from heedful.selector.chat import messages

    tok = session.tokenizer
    stops = [tok.decode([t]) for t in sorted(session.config.stop_ids)]
    return messages(session.token_texts, session.token_sources, stops)


class Live:
    """A session whose KV bank is in memory."""

    def __init__(self, session, sid: int | None, rebuilt: int = 0):
        self.session, self.sid = session, sid
        self.rebuilt = rebuilt  # tokens re-encoded to bring it back from the store
        self.busy = False
        self.kv = 0  # bytes counted for it: its bound (Pool.bound), set by the pool
        self.last = time.monotonic()

    @property
    def recorder(self):
        return self.session.recorder


class Pool:
    def __init__(self, lm, store, settings: dict, *, max_kv_bytes: int, slots: int = 1,
                 wait_s: float = 30.0, index_sessions: int = 1000):
        self.lm, self.store, self.settings = lm, store, dict(settings)
        self.max_kv_bytes, self.wait_s = max_kv_bytes, wait_s
        self.compute = FairLock(slots)
        self._cond = threading.Condition()
        self._live: collections.OrderedDict[int, Live] = collections.OrderedDict()  # least recent first
        self._locks: dict[int, threading.Lock] = {}
        self._index: dict[str, int] = {}
        self._key: dict[int, str] = {}
        self.released = 0  # sessions released to make room
        self._all: set[Live] = set()  # every session the pool holds, live or being opened
        self._reserved = 0  # bytes of sessions being opened
        self.stop_ids, self.row_bytes = self._probe()
        self.session_bytes = self.bound(self._default_budget)
        if self.session_bytes > max_kv_bytes:
            raise HeedfulError(f"--max-kv-bytes {max_kv_bytes:,}: one session (budget {self._default_budget}) "
                               f"needs up to {self.session_bytes:,} bytes of KV; give at least that")
        self._build_index(index_sessions)

    # ---------------------------------------------------------------- the index
    def _build_index(self, limit: int) -> None:
        """Conversations of the store's chat sessions of this model (the most recent `limit`)."""
        from heedful.selector.chat import messages

        if not getattr(self.lm.tokenizer, "chat_template", None):
            return
        stops = [self.lm.tokenizer.decode([t]) for t in self.stop_ids]
        try:
            infos = self.store.sessions()[-limit:]
        except HeedfulError as e:  # a damaged row: the server still serves, new histories start sessions
            sys.stderr.write(f"heedful: warning: the store's sessions are not indexed ({e})\n")
            return
        for info in infos:
            if info.model != self.lm.name or not info.tokens:
                continue
            try:
                data = self.store.load(info.id)
            except HeedfulError:
                continue
            if "user" in data.token_sources:
                key = key_of(conversation(messages(data.token_texts, data.token_sources, stops)))
                self._index[key], self._key[info.id] = info.id, key

    def _probe(self) -> tuple[list[int], int]:
        """The model's stop ids and the most KV bytes one budget row can take (keys, values
        and the rotary masters a bank allocates once a row is dropped, folded or evicted),
        from a session of the configured settings opened and let go (bad settings are
        refused here, at start)."""
        from heedful.app.open import session_for

        s = session_for(self.lm, **self.settings)
        with self.compute:
            s.feed([sorted(s.config.stop_ids)[0] if s.config.stop_ids else 0])  # the KV banks are allocated at once
        cache = s.residency.cache
        if cache.bank is not None:
            cache.bank.ensure_masters()  # what the bank grows to
        self._default_budget = s.config.budget
        return sorted(s.config.stop_ids), -(-cache.allocated_bytes() // cache.capacity)

    def bound(self, budget: int) -> int:
        """The most KV bytes a session of this budget holds."""
        return self.row_bytes * int(budget)

    def _bound_of(self, session) -> int:
        return max(self.bound(session.config.budget), session.stats().allocated_bytes)

    def match(self, messages) -> tuple[int, int] | None:
        """(session id, k): the stored session whose conversation is the longest prefix
        messages[:k] (k < len(messages)), or None."""
        conv = conversation(messages)
        with self._cond:
            for k in range(len(conv) - 1, 0, -1):
                sid = self._index.get(key_of(conv[:k]))
                if sid is not None:
                    return sid, k
        return None

    def remember(self, live: Live) -> None:
        """After a chat request: the session's conversation now leads to it."""
        conv = conversation(session_messages(live.session))
        key = key_of(conv)
        with self._cond:
            old = self._key.get(live.sid)
            if old is not None and self._index.get(old) == live.sid:
                del self._index[old]
            self._index[key], self._key[live.sid] = live.sid, key

    # ---------------------------------------------------------------- locks and memory
    def session_lock(self, sid: int) -> threading.Lock:
        with self._cond:
            return self._locks.setdefault(sid, threading.Lock())

    def kv_bytes(self) -> int:
        """KV bytes of every session held, and those being opened."""
        with self._cond:
            return self._held()

    def _held(self) -> int:
        return sum(v.kv for v in self._all) + self._reserved

    def live_ids(self) -> list[int]:
        with self._cond:
            return list(self._live)

    def _room(self, need: int) -> None:
        """Releases idle sessions, least recently used first, until `need` more bytes fit;
        waits for busy ones to finish (up to wait_s), then refuses with 503."""
        deadline = time.monotonic() + self.wait_s
        while self._held() + need > self.max_kv_bytes:
            idle = [sid for sid, v in self._live.items() if not v.busy]
            if idle:
                self._release(idle[0])
                continue
            if need > self.max_kv_bytes:
                raise ApiError(f"a session needs {need:,} bytes of KV, over --max-kv-bytes {self.max_kv_bytes:,}",
                               503, None, "server_error", "kv_memory")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ApiError("every live session is busy and KV memory is full; try again", 503, None,
                               "server_error", "overloaded")
            self._cond.wait(left)

    def _release(self, sid: int) -> None:
        live = self._live.pop(sid)
        self._all.discard(live)
        live.recorder.close()  # everything was committed at the end of its last request
        self.released += 1

    def _opening(self, open_it, need: int | None = None) -> Live:
        """Opens a session with room reserved for it first (its bound)."""
        need = self.session_bytes if need is None else need
        if need > self.max_kv_bytes:
            raise ApiError(f"a session needs {need:,} bytes of KV, over --max-kv-bytes {self.max_kv_bytes:,}",
                           503, None, "server_error", "kv_memory")
        with self._cond:
            self._room(need)
            self._reserved += need
        try:
            live = open_it()
        finally:
            with self._cond:
                self._reserved -= need
                self._cond.notify_all()
        with self._cond:
            live.kv = self._bound_of(live.session)
            live.busy = True
            self._all.add(live)
        return live

    def rebudget(self, live: Live, budget: int | None) -> None:
        """Before a session's budget changes to `budget`: room for its new bound (idle
        sessions released, as for a new one). `settled` then counts what it holds."""
        if budget is None or not isinstance(budget, int) or isinstance(budget, bool):
            return
        new = self.bound(budget)
        if new > self.max_kv_bytes:
            fits = self.max_kv_bytes // self.row_bytes
            raise ApiError(f"heedful.budget: budget {budget} needs up to {new:,} bytes of KV, over the server's "
                           f"bound of {self.max_kv_bytes:,} (a budget of at most {fits:,} fits)",
                           400, "heedful.budget", code="kv_memory")
        with self._cond:
            if new > live.kv:
                self._room(new - live.kv)
                live.kv = new

    def settled(self, live: Live) -> None:
        """After a budget change (made or refused): the session counts its bound again."""
        with self._cond:
            live.kv = self._bound_of(live.session)
            self._cond.notify_all()

    def checkout(self, sid: int) -> Live:
        """The live session `sid`, marked busy; rebuilt from the store when it is not live."""
        with self._cond:
            live = self._live.get(sid)
            if live is not None:
                live.busy = True
                self._live.move_to_end(sid)
                return live
        try:
            info = self.store.session(sid)
        except HeedfulError:
            raise ApiError(f"session {sid}: no such session", 404, "heedful.session",
                           code="session_not_found") from None
        budget = info.config.get("budget") if isinstance(info.config, dict) else None
        need = self.bound(budget) if isinstance(budget, int) and budget > 0 else self.session_bytes
        live = self._opening(lambda: self._open(sid), need)
        self.admit(live)
        return live

    def _open(self, sid: int) -> Live:
        from heedful.app.open import resume

        with self.compute:
            s = resume(self.store, sid, lm=self.lm, atomic=True)
        return Live(s, sid, rebuilt=len(s.retained()))  # its resume event is held until a request commits

    def new(self, title: str | None = None) -> Live:
        """A new session (not stored until its first request commits), marked busy."""
        from heedful.app.open import session_for

        def open_it():
            with self.compute:
                s = session_for(self.lm, recorder=self.store.new_session(title=title, atomic=True), **self.settings)
            return Live(s, None)

        return self._opening(open_it)

    def admit(self, live: Live) -> None:
        """A session joins (or stays in) the live set, busy."""
        with self._cond:
            live.busy = True
            self._all.add(live)
            self._live[live.sid] = live
            self._live.move_to_end(live.sid)

    def checkin(self, live: Live) -> None:
        with self._cond:
            live.busy = False
            live.last = time.monotonic()
            live.kv = self._bound_of(live.session)
            try:
                self._room(0)
            except ApiError:
                pass
            self._cond.notify_all()

    def forget(self, live: Live) -> None:
        """Drops a session whose request failed half-way: what it did since its last commit
        is discarded, and the store's version is what the next request rebuilds."""
        live.recorder.discard()
        live.recorder.close()
        with self._cond:
            self._all.discard(live)
            if live.sid is not None and self._live.get(live.sid) is live:
                del self._live[live.sid]
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            for sid in list(self._live):
                self._release(sid)
            self._all.clear()
