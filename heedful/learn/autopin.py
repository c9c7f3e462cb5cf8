"""Auto-pin: pin what a picker scores high while a session streams, within the budget.

- A token is judged from its hidden states and those of the `lookahead` tokens after it
  (picker.py), so the decision on a word waits until those tokens have arrived and the next
  word has begun (or the stream ends: `flush`); a word is pinned when its best token scores
  at least the threshold (each word its own pin: the unit that leaves when room is needed).
- A prompt's states come from a plain forward over it (and up to the picker's stride of
  tokens before it) before it is processed: the spans it decides inside the prompt go into
  `Session.prompt(text, pin=[(a, b), ...])`, pinned before prefill; those it decides for the
  last words before it (waiting for their lookahead) are pinned just before, still in the
  window.
- A generated token's states are read from the very forward that produced it (forward
  hooks on the picker's layers: no extra forward), and decided words are pinned with
  `Session.pin((a, b))` while they are in the window.
- Pins never overflow the budget: before an auto-pin that would not fit beside the window
  and the other pins, the oldest auto-pins are unpinned (`Session.unpin`) until it fits,
  and an auto-pin that cannot fit is skipped. Auto-pin owns only the tokens it pinned
  itself (not those already pinned, nor a prompt's own pins), so the person's pins are
  never unpinned; a token the person pins after auto-pin did is counted as auto-pin's.

- Everything is logged by the session as prompt pins, pins and unpins, so a recording made
  with auto-pin replays without the picker; they are marked as the picker's (through the
  session's recorder, store/tagging.py, never the engine): a pin or unpin auto-pin makes
  carries `"by": "picker"`, a prompt the spans it pinned as `"picker_pins"`. `heedful learn`
  leaves them out of its labels unless the person judged them.
- With `pinning` off (a UI's suggestions: the person decides), nothing is pinned: decided
  words become suggestions (`take_suggestions()`), and so do words auto-pin had no room for.
- A UI calls `prompt`, `start`, `token`, `flush` and `close` from its generating thread and
  `claim`, `make_room`, `owned` and `take_suggestions` from its own: they hold `lock`.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import torch

from heedful.errors import BudgetError
from heedful.learn.features import Tap
from heedful.learn.picker import Picker, Suggestion, words
from heedful.spans import Spans, runs
from heedful.store.tagging import tagging


class AutoPinner:
    def __init__(self, picker: Picker, model, pinning: bool = True):
        self.picker, self.model = picker, model
        self.pinning = pinning  # False: decided words are suggestions, nothing is pinned
        self.lock = threading.RLock()
        self._suggested: list[Suggestion] = []  # decided, not pinned, not taken yet
        self.auto_spans: deque[tuple[int, int]] = deque()  # oldest first
        self.unpinned: list[tuple[int, int]] = []  # auto-pins given up for room
        self.tap: Tap | None = None
        # the tail not decided yet: tokens [_base, _base + len(_h)), their embedded states, texts and
        # (once enough tokens follow) scores; _word: the first token of the first undecided word
        self._base = self._word = 0
        self._h: list = []
        self._texts: list[str] = []
        self._scores: list[float] = []
        self._prev = ""
        self.score_seconds = 0.0
        self.score_seconds_generating = 0.0  # of which in `token`
        self.scored = 0

    # ---------------------------------------------------------------- budget
    def _fits(self, session, extra: list[tuple[int, int]]) -> bool:
        trial = Spans(session.pins())
        for a, b in extra:
            trial.add(a, b)
        c = session.config
        return session.policy.fixed_rows(trial) + c.window <= c.budget

    def _evict_oldest(self, session) -> bool:
        """Unpins the oldest auto-pin (what the person pinned of it stays); False if none."""
        if not self.auto_spans:
            return False
        a, b = self.auto_spans.popleft()  # tokens auto-pin pinned itself (none the person had)
        pinned = Spans(session.pins())
        with tagging(session).tagged(by="picker"):
            for x, y in runs([t for t in range(a, b) if t in pinned]):
                session.unpin((x, y))
        self.unpinned.append((a, b))
        return True

    def _make_room(self, session, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Unpins the oldest auto-pins until `spans` fit; drops the earliest of `spans`
        themselves when the older ones are not enough. Returns what fits."""
        spans = list(spans)
        while spans and not self._fits(session, spans):
            if not self._evict_oldest(session):
                spans.pop(0)
        return spans

    # ---------------------------------------------------------------- the pending tail
    def _sync(self, session) -> None:
        """Starts over if the stream moved without us (a rewind, text added elsewhere)."""
        n = len(session)
        if self._base + len(self._h) != n:
            self._h, self._texts, self._scores = [], [], []
            self._base = self._word = n
            self._prev = session.token_texts[n - 1] if n else ""
            self.auto_spans = deque((a, min(b, n)) for a, b in self.auto_spans if a < n)

    def _advance(self, h: torch.Tensor | None, texts: list[str], final: bool) -> list[tuple[int, int, float]]:
        """Adds the states and texts of the next tokens; returns the words now decided to be
        pinned, with their best score (a token is scored once `lookahead` tokens follow it,
        or at the end; a word is decided once all its tokens are scored and the next word
        has begun)."""
        t0 = time.perf_counter()
        if h is not None and len(texts):
            self._h.extend(self.picker.embed(h).unbind(0))
            self._texts.extend(texts)
        la = self.picker.lookahead
        n = len(self._h)
        lo, hi = len(self._scores), (n if final else max(len(self._scores), n - la))
        if hi > lo:
            e = torch.stack(self._h[lo:min(n, hi + la)])
            self._scores.extend(self.picker.score_embedded(e, hi - lo).tolist())
            self.scored += hi - lo
        # words from the first undecided one
        off = self._word - self._base
        ws = words(self._texts[off:], self._texts[off - 1] if off else self._prev)
        spans: list[tuple[int, int, float]] = []
        done = off
        for k, (a, b) in enumerate(ws):
            a, b = a + off, b + off
            complete = k + 1 < len(ws) or final
            if not complete or b > len(self._scores):
                break
            best = max(self._scores[a:b])
            if best >= self.picker.threshold and "".join(self._texts[a:b]).strip():
                spans.append((a + self._base, b + self._base, best))
            done = b
        # forget what is decided, keeping the states the next scores need
        self._word = self._base + done
        keep_from = min(done, len(self._scores))
        if keep_from:
            self._prev = self._texts[keep_from - 1]
            del self._h[:keep_from], self._texts[:keep_from], self._scores[:keep_from]
            self._base += keep_from
        self.score_seconds += time.perf_counter() - t0
        return spans

    def _pin_now(self, session, spans: list[tuple[int, int, float]]) -> None:
        """Pins decided spans of tokens already in the stream (still in the window); with
        `pinning` off, or without room, they are suggestions."""
        for a, b, score in spans:
            pinned = Spans(session.pins())
            new = [t for t in range(a, b) if t not in pinned]
            if not new:
                continue
            if not self.pinning or not self._make_room(session, [(a, b)]):
                self._suggest(new, score)
                continue
            try:
                with tagging(session).tagged(by="picker"):
                    session.pin((a, b))
            except BudgetError:
                self._suggest(new, score)
                continue
            for x, y in runs(new):
                self._record(x, y)

    def _suggest(self, tokens: list[int], score: float) -> None:
        self._suggested.extend(Suggestion(x, y, score) for x, y in runs(tokens))

    def _record(self, a: int, b: int) -> None:
        self.auto_spans.append((a, b))  # one entry per word: the unit that leaves for room

    # ---------------------------------------------------------------- prompts
    def prompt(self, session, text: str, pins=()) -> range:
        """Session.prompt(text, pin=...) with the picker's spans of the prompt added; spans
        of the tokens before it that its first words decide are pinned just before it.
        (With `pinning` off: Session.prompt(text, pin=pins), the spans are suggestions.)"""
        with self.lock:
            return self._prompt(session, text, pins)

    def _prompt(self, session, text: str, pins) -> range:
        tagging(session)
        self._sync(session)
        tok = session.tokenizer
        ids = list(tok(text, add_special_tokens=not session.token_ids)["input_ids"])
        if not ids:
            return session.prompt(text, pin=pins)
        start = len(session)
        t0 = time.perf_counter()
        ctx = list(session.token_ids[max(0, start - self.picker.meta["stride"]):])
        h = self.picker.states(self.model, ctx + ids)[len(ctx):]
        self.score_seconds += time.perf_counter() - t0
        spans = self._advance(h, session.stream.preview(ids), final=False)
        self._pin_now(session, [(a, min(b, start), p) for a, b, p in spans if a < start])
        person = list(pins)
        theirs = Spans(session.stream.resolve_ahead(ids, person)) if person else Spans()
        later = [(max(a, start), b, p) for a, b, p in spans if b > start]
        if not self.pinning:
            r = session.prompt(text, pin=person)
            for a, b, p in later:
                self._suggest([t for t in range(a, b) if t not in theirs], p)
            return r
        new = self._make_room(session, [(a, b) for a, b, _ in later])
        while True:
            owned = [r for a, b in new for r in runs([t for t in range(a, b) if t not in theirs])]
            try:
                with tagging(session).tagged(**({"picker_pins": [list(r) for r in owned]} if owned else {})):
                    r = session.prompt(text, pin=person + new)
                break
            except BudgetError:  # the person's own pins of this prompt need the room
                if not new:
                    raise
                if not self._evict_oldest(session):
                    new.pop(0)
        for x, y in owned:  # what the person asked for in this prompt stays theirs
            self._record(x, y)
        kept = Spans(new)
        for a, b, p in later:  # no room for them: suggestions
            self._suggest([t for t in range(a, b) if not kept.overlaps(t, t + 1) and t not in theirs], p)
        return r

    # ---------------------------------------------------------------- generation
    def _ensure_tap(self) -> Tap:
        if self.tap is None:
            self.tap = Tap(self.model, self.picker.layers)
        return self.tap

    def start(self) -> None:
        """Installs the hooks before the first generated token (`token` does it too, and
        then reads the first token's state with a plain forward)."""
        self._ensure_tap()

    def token(self, session, tok) -> None:
        """After each generated token (a Token of Session.generate): its state, read from
        the step that produced it, joins the tail; decided words are pinned."""
        with self.lock:
            self._token(session, tok)

    def _token(self, session, tok) -> None:
        if self._base + len(self._h) != tok.index:
            self._sync(session)
            self._base = self._word = tok.index
            self._prev = session.token_texts[tok.index - 1] if tok.index else ""
        t0 = time.perf_counter()
        tap = self._ensure_tap()
        fresh = tap.calls and all(k in tap.last for k in tap.layers) and tap.last[tap.layers[-1]].shape[0] == 1
        if fresh:
            h = tap.features(slice(-1, None))
        else:  # no step of our own to read (hooks installed late, or another forward came between)
            lo = max(0, tok.index + 1 - self.picker.meta["stride"])
            h = self.picker.states(self.model, list(session.token_ids[lo:tok.index + 1]))[-1:]
        tap.calls = 0
        t1 = time.perf_counter()
        self.score_seconds += t1 - t0
        spans = self._advance(h, [tok.text], final=False)  # adds its own time to score_seconds
        self.score_seconds_generating += time.perf_counter() - t0
        self._pin_now(session, spans)

    def flush(self, session) -> None:
        """The stream ended (or pauses for good): decide the tail, its end as the stream's."""
        with self.lock:
            if self._base + len(self._h) == len(session):
                self._pin_now(session, self._advance(None, [], final=True))

    # ---------------------------------------------------------------- for a UI's own thread
    def take_suggestions(self) -> list[Suggestion]:
        """The words decided but not pinned since the last call (oldest first)."""
        with self.lock:
            out, self._suggested = self._suggested, []
            return out

    def owned(self) -> list[tuple[int, int]]:
        """The auto-pins (token spans auto-pin pinned itself), oldest first."""
        with self.lock:
            return list(self.auto_spans)

    def claim(self, a: int, b: int) -> None:
        """The person pinned [a, b): what auto-pin owned of it is theirs now (never unpinned
        for room)."""
        with self.lock:
            kept: deque[tuple[int, int]] = deque()
            for x, y in self.auto_spans:
                kept.extend(r for r in ((x, min(y, a)), (max(x, b), y)) if r[0] < r[1])
            self.auto_spans = kept

    def make_room(self, session, spans: list[tuple[int, int]]) -> bool:
        """Unpins the oldest auto-pins until `spans` (the person's) fit; whether they do."""
        with self.lock:
            while not self._fits(session, spans):
                if not self._evict_oldest(session):
                    return False
            return True

    def close(self) -> None:
        if self.tap is not None:
            self.tap.close()
            self.tap = None



def scoring_cost(lm, picker: Picker, n: int = 48, rounds: int = 3) -> dict:
    """What auto-pin costs per generated token: the same greedy generation of n tokens with
    and without an AutoPinner (best of `rounds` each, alternated), and the time spent in
    scoring alone (reading the step's states, the head, the word decisions)."""
    from heedful.selector.session import Session

    text = "Facts: The code for the red door is 4821. Tom was born in Lima.\nElla walked to the market."
    best = {False: float("inf"), True: float("inf")}
    scoring = float("inf")
    for _ in range(rounds):
        for auto in (False, True):
            s = Session(lm.model, lm.tokenizer, gated=lm.gated, seed=0)
            pinner = AutoPinner(picker, lm.model) if auto else None
            if pinner:
                pinner.prompt(s, text)
                pinner.start()
            else:
                s.prompt(text)
            t0 = time.perf_counter()
            k = 0
            for tok in s.generate(n):
                k += 1
                if pinner:
                    pinner.token(s, tok)
            dt = (time.perf_counter() - t0) / max(1, k)
            best[auto] = min(best[auto], dt)
            if pinner:
                scoring = min(scoring, pinner.score_seconds_generating / max(1, k))
                pinner.close()
    plain = best[False]
    return {"tokens": n, "ms_per_token": round(plain * 1e3, 3), "ms_per_token_auto_pin": round(best[True] * 1e3, 3),
            "scoring_ms_per_token": round(scoring * 1e3, 4), "scoring_share": round(scoring / plain, 4),
            "overhead": round(best[True] / plain - 1, 4)}
