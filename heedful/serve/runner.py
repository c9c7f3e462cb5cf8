"""One request against one session, on a worker thread: find or open the session, append
the new turns, make the marks the request asks for, stream the reply, commit.

A request is one transaction in the store: its sessions' recorders hold what happens
(atomic mode) and commit it when the reply ends, is cut by `max_tokens`, or is cut by the
client leaving. A request refused half-way (a pin that matches nothing, a turn the chat
template refuses) discards what it held and the live session with it, so the session is
what the store holds, unchanged; a server killed mid-stream leaves the store as it was
before that request (no half turn).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from heedful.errors import HeedfulError
from heedful.serve.pool import Live, Pool, conversation, session_messages
from heedful.serve.protocol import ApiError, ChatRequest, CompletionRequest, bad, parse_target

LOCK_POLL_S = 0.05


@dataclass
class Outcome:
    sid: int
    text: str = ""
    finish: str = "length"
    prompt_tokens: int = 0  # the stream before the reply
    completion_tokens: int = 0
    prefill_tokens: int = 0  # tokens encoded for this request (new turns, a rebuild)
    continued: bool = False  # an existing session
    rebuilt: int = 0  # tokens re-encoded to bring the session back from the store
    marked: dict = field(default_factory=dict)
    first_token_s: float | None = None
    report: dict = field(default_factory=dict)


class Cancelled(Exception):
    """The client left before its request started."""


def _locked(lock, cancelled) -> None:
    while not lock.acquire(timeout=LOCK_POLL_S):
        if cancelled.is_set():
            raise Cancelled()


def _resolve(pool: Pool, req: ChatRequest | None, ex, cancelled) -> tuple[Live, list, object]:
    """(live session, the messages to add, its lock or None) for a request."""
    sid, k = ex.session, 0
    if sid is None and isinstance(req, ChatRequest) and not ex.new:
        found = pool.match(req.messages)
        if found is not None:
            sid, k = found
    if sid is None:
        return pool.new(_title(req)), list(req.messages) if isinstance(req, ChatRequest) else [], None
    lock = pool.session_lock(sid)
    _locked(lock, cancelled)
    try:
        live = pool.checkout(sid)
    except BaseException:
        lock.release()
        raise
    if not isinstance(req, ChatRequest):
        return live, [], lock
    stored = conversation(session_messages(live.session))
    given = conversation(req.messages)
    if ex.append:
        return live, list(req.messages), lock
    if k and stored == given[:k]:
        return live, list(req.messages[k:]), lock
    if ex.session is None:  # the matched session moved on meanwhile: a new one
        pool.checkin(live)
        lock.release()
        return pool.new(_title(req)), list(req.messages), None
    try:
        for i, (s, g) in enumerate(zip(stored, given)):
            if s != g:
                raise ApiError(f"messages[{i}]: differs from turn {i} of session {sid} (a {s[0]} turn "
                               f"{s[1][:60]!r}); send the session's history, or heedful.append to send only new turns",
                               409, f"messages[{i}]", code="history_mismatch")
        if len(given) <= len(stored):
            raise ApiError(f"messages: {len(given)} messages do not extend session {sid}'s {len(stored)} turns",
                           409, "messages", code="history_mismatch")
    except ApiError:
        pool.checkin(live)
        lock.release()
        raise
    return live, list(req.messages[len(stored):]), lock


def _title(req) -> str:
    text = req.prompt if isinstance(req, CompletionRequest) else next(
        (m["content"] for m in req.messages if m["role"] == "user"), "")
    return "serve: " + " ".join(text.split())[:72]


def _apply_settings(pool: Pool, live: Live, ex, sampling) -> None:
    session = live.session
    changes = dict(ex.settings)
    if sampling.temperature is not None and sampling.temperature != session.config.temperature:
        changes["temperature"] = sampling.temperature
    if sampling.top_p is not None and sampling.top_p > 0 and sampling.top_p != session.config.top_p:
        changes["top_p"] = sampling.top_p
    if changes:
        _set(pool, live, changes)


def _set(pool: Pool, live: Live, changes: dict) -> None:
    """Session.set (room for a larger budget was reserved before the compute lock was
    taken: pool.rebudget may wait for other requests)."""
    try:
        live.session.set(**changes)
    except HeedfulError as e:
        name = next((k for k in ("budget", "window") if k in changes), None) or next(iter(changes))
        raise bad(f"heedful.{name}" if name in ("budget", "window") else name, request_words(str(e))) from None
    finally:
        pool.settled(live)


def request_words(message: str) -> str:
    """An engine's message in a request's words: without the `set: ` of Session.set, and its
    settings named as the request's fields (`budget`, `window`), not as the CLI's flags."""
    message = re.sub(r"^set: ", "", message)
    return re.sub(r"(?<![\w-])--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), message)


def _marks(session, ex) -> dict:
    out = {}
    for op in ("pin", "unpin", "drop", "recall"):
        for i, text in enumerate(getattr(ex, op)):
            param = f"heedful.{op}[{i}]"
            target = parse_target(text, param)
            try:
                ranges = getattr(session, op)(target)
            except HeedfulError as e:
                raise bad(param, str(e), "target") from None
            out.setdefault(op, []).extend([list(r) for r in ranges])
    for i, (text, gist) in enumerate(ex.fold):
        param = f"heedful.fold[{i}]"
        try:
            ranges = session.fold(parse_target(text, param), gist)
        except HeedfulError as e:
            raise bad(param, str(e), "target") from None
        out.setdefault("fold", []).extend([list(r) for r in ranges])
    return out


class _Stops:
    """Stop strings: text is held back while it could still become one."""

    def __init__(self, stops):
        self.stops, self.held, self.hit = [s for s in stops if s], "", False

    def feed(self, text: str) -> str:
        if not self.stops:
            return text
        self.held += text
        at = min((i for i in (self.held.find(s) for s in self.stops) if i >= 0), default=-1)
        if at >= 0:
            out, self.held, self.hit = self.held[:at], "", True
            return out
        keep = max((k for s in self.stops for k in range(1, len(s)) if self.held.endswith(s[:k])), default=0)
        out = self.held[: len(self.held) - keep]
        self.held = self.held[len(out):]
        return out

    def rest(self) -> str:
        out, self.held = self.held, ""
        return out


def _generate(pool: Pool, session, sampling, out: Outcome, emit, cancelled, t0: float) -> None:
    hidden = set(session.config.stop_ids) & set(getattr(session.tokenizer, "all_special_ids", ()) or ())
    stops = _Stops(sampling.stop)
    parts = []
    gen = session.generate(sampling.max_tokens, stop_at_eos=True)
    try:
        while not cancelled.is_set():
            with pool.compute:
                tok = next(gen, None)
            if tok is None:
                break
            out.completion_tokens += 1
            if out.first_token_s is None:
                out.first_token_s = time.perf_counter() - t0
            if tok.id in session.config.stop_ids:
                out.finish = "stop"
            if tok.id in hidden:
                continue
            piece = stops.feed(tok.text)
            if piece:
                parts.append(piece)
                emit(piece)
            if stops.hit:
                out.finish = "stop"
                break
        if cancelled.is_set():
            out.finish = "cancelled"
    finally:
        with pool.compute:
            gen.close()  # a reply cut short is logged as a stop
    rest = stops.rest() if not stops.hit else ""
    if rest:
        parts.append(rest)
        emit(rest)
    out.text = "".join(parts)


def report(live: Live) -> dict:
    """What is resident: the extra `"heedful"` object of a response."""
    s = live.session
    st = s.stats()
    pins = [{"range": [a, b], "text": s.text(a, b)[:200]} for a, b in s.pins()[:64]]
    return {"session": live.sid, "tokens": st.tokens, "resident": st.resident, "window": st.window,
            "budget": st.budget, "evicted": st.evicted, "pinned": st.pinned, "pins": pins,
            "folds": [{"range": [a, b], "gist": g[:200]} for a, b, g in s.folds()[:64]],
            "kv_bytes": st.allocated_bytes}


def run(pool: Pool, req: ChatRequest | CompletionRequest, emit, cancelled) -> Outcome:
    """Runs a chat (ChatRequest) or completion request; `emit(text)` is called with each
    piece of the reply; `cancelled` (a threading.Event) stops it between two tokens."""
    t0 = time.perf_counter()
    chat = isinstance(req, ChatRequest)
    ex = req.extras
    if not chat and ex.append:
        raise bad("heedful.append", "only for chat completions (a completion's prompt is always appended)")
    live, turns, lock = _resolve(pool, req, ex, cancelled)
    session = live.session
    out = Outcome(sid=live.sid or 0, continued=live.sid is not None, rebuilt=live.rebuilt)
    live.rebuilt = 0
    committed = False
    try:
        if chat and session.template is None:
            raise bad("messages", "this model has no chat template: use /v1/completions with a plain prompt")
        pool.rebudget(live, ex.settings.get("budget"))
        with pool.compute:
            _apply_settings(pool, live, ex, req.sampling)
            if chat:
                for i, m in enumerate(turns):
                    if not m["content"].strip():
                        raise bad(f"messages[{len(req.messages) - len(turns) + i}].content", "must not be empty")
                    try:
                        out.prefill_tokens += len(session.say(m["content"], m["role"]))
                    except HeedfulError as e:
                        raise bad(f"messages[{len(req.messages) - len(turns) + i}]", str(e)) from None
            else:
                try:
                    out.prefill_tokens += len(session.prompt(req.prompt))
                except HeedfulError as e:
                    raise bad("prompt", str(e)) from None
            out.marked = _marks(session, ex)
        out.prompt_tokens = len(session)
        _generate(pool, session, req.sampling, out, emit, cancelled, t0)
        new = live.sid is None
        live.sid = live.recorder.commit(pool.store)
        committed = True
        out.sid = live.sid
        if new:  # nobody knows its id yet: its lock is free, and held until this request ends
            lock = pool.session_lock(live.sid)
            lock.acquire()
        pool.admit(live)
        if chat:
            pool.remember(live)
        out.report = report(live)
        return out
    except BaseException:
        if not committed:
            pool.forget(live)
        raise
    finally:
        if committed:
            pool.checkin(live)
        if lock is not None:
            lock.release()


def mark(pool: Pool, sid: int, ex) -> dict:
    """The marks of a `"heedful"` object (pin, unpin, drop, recall, fold, window, budget) made
    on a stored session outside any request for a reply (POST /v1/sessions/{id}/marks)."""
    lock = pool.session_lock(sid)
    with lock:
        live = pool.checkout(sid)
        committed = False
        try:
            pool.rebudget(live, ex.settings.get("budget"))
            with pool.compute:
                if ex.settings:
                    _set(pool, live, dict(ex.settings))
                marked = _marks(live.session, ex)
            live.recorder.commit(pool.store)
            committed = True
            return {"marked": marked, **report(live)}
        finally:
            if committed:
                pool.checkin(live)
            else:
                pool.forget(live)
