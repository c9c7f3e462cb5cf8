"""A learned picker in the app (`heedful chat --picker DIR`): suggestions, accept, reject,
auto-pin.

The app gets the picker from the CLI as a callable, `picker(session) -> pinner`, duck-typed
so that this room imports nothing of heedful.learn (the CLI passes heedful.learn's
AutoPinner, made with `pinning` off). One pinner follows each session's stream; it runs on
the generating worker's thread (docs/learn.md's thread rule: its hooks read the forwards of
the thread that installed them), where a prompt is scored before it is processed and each
generated token from the very step that produced it. The pinner is used as:

- `prompt(session, text, pins)` in place of `session.prompt`, `start()` before a generate,
  `token(session, tok)` after each token, `flush(session)` and `close()` when the stream
  ends (the worker's thread);
- `take_suggestions()` -> the words it decided (objects with start, end, score) since the
  last call, `owned()` -> its auto-pins, `claim(a, b)`, `make_room(session, spans)`, and
  `pinning` (auto-pin on or off; set under `lock`) (the UI thread).

Keys: `a` accepts the suggestions under the cursor (or the selection), else every one in
view: pinned, and logged `{"op": "accept", "range": [a, b], "score": s}`; `x` rejects them
the same way (`"reject"`; the text stays as it is). On an auto-pin under the cursor, `a`
makes it the person's own pin and `x` unpins it, each logged the same way. `A` turns auto-pin
on or off: the words the picker decides are then pinned as they stream (the oldest auto-pins
leave first when room is needed, never the person's pins), logged `"by": "picker"`. A pin
the person makes when the budget is full of auto-pins takes the room of the oldest ones.
These events are `heedful learn`'s labels (heedful/learn/labels.py).

`Suggestions` is a controller the app holds (`app.suggest`; the keys `a`, `x`, `A` call
it): it keeps the picker, the pinner of the current session and the suggestions shown, and
acts through the app's public face (session, view, generating, `apply`, `notify`,
`refresh_stream`). The app's generating worker calls the pinner it hands out; `marks()` and
`status()` are what the view and the side panel show; `mark(op, span)` is how the app pins,
unpins and drops the person's spans (a pin takes the oldest auto-pins' room).
"""

from __future__ import annotations

import bisect

from heedful.errors import BudgetError, HeedfulError
from heedful.spans import Spans, runs
from heedful.store.tagging import tagging


def visible_tokens(view) -> tuple[int, int] | None:
    """[first, last + 1) of the tokens on the lines the token view shows."""
    top, height = int(view.scroll_offset.y), view.scrollable_content_region.height
    toks = [t for line in view.lines[top:top + height] for t, _ in line]
    return (min(toks), max(toks) + 1) if toks else None


class Suggestions:
    def __init__(self, app, picker=None, auto_pin: bool = False):
        self.app = app
        self.picker = picker  # callable session -> pinner, or None (no --picker)
        self.auto_pin = auto_pin
        self._pinner = self._pinner_session = None
        self.suggestions: list = []  # (start, end, score) of words suggested, sorted by start

    # ------------------------------------------------------------------ the pinner
    @property
    def pinner(self):
        """The current session's pinner (made on first use, on the UI thread)."""
        if self.picker is None:
            return None
        session = self.app.session
        if self._pinner_session is not session:
            if self._pinner is not None:
                self._pinner.close()
            tagging(session)  # before any worker runs: notes and the picker's tags go through it
            self._pinner, self._pinner_session = self.picker(session), session
            self._pinner.pinning = self.auto_pin
            self.suggestions = []
        return self._pinner

    @staticmethod
    def end_stream(pinner, session) -> None:
        """(worker thread) The stream stopped: the last words are decided, the hooks go."""
        try:
            pinner.flush(session)
        except HeedfulError:
            pass
        finally:
            pinner.close()

    # ------------------------------------------------------------------ what the view shows
    def marks(self) -> dict:
        """MemoryState's suggested and auto spans: new suggestions taken from the pinner,
        those no longer in the stream, pinned or dropped left out."""
        pinner = self.pinner
        if pinner is None:
            return {}
        s = self.app.session
        n, pins, dropped = len(s), Spans(s.pins()), Spans(s.dropped())
        out = []
        new = [(x.start, x.end, x.score) for x in pinner.take_suggestions()]
        for x in self.suggestions + new:
            if x[1] > n:  # cut off by a rewind: those tokens are other ones now
                continue
            if not pins.overlaps(x[0], x[1]) and not dropped.overlaps(x[0], x[1]):
                out.append(x)
                continue
            keep = [t for t in range(x[0], x[1]) if t not in pins and t not in dropped]
            out.extend((a, b, x[2]) for a, b in runs(keep))  # what is left of it, run by run
        out.sort()
        self.suggestions = out
        return {"suggested": Spans((a, b) for a, b, _ in out), "auto": Spans(pinner.owned())}

    def status(self) -> dict | None:
        if self.pinner is None:
            return None
        return {"auto_pin": self.auto_pin, "suggested": len(self.suggestions), "auto_pinned": len(self.pinner.owned())}

    # ------------------------------------------------------------------ the person's marks
    def mark(self, op: str, span: tuple[int, int]) -> None:
        """pin / unpin / drop of the person's span; a pin takes the room of the oldest
        auto-pins when the budget is full, and what auto-pin owned of the span is the
        person's from then on."""
        s, pinner = self.app.session, self.pinner
        if op == "pin" and pinner is not None:
            try:
                s.pin(span)
            except BudgetError:
                if not pinner.make_room(s, [span]):
                    raise
                s.pin(span)
        else:
            {"pin": s.pin, "unpin": s.unpin, "drop": s.drop}[op](span)
        if pinner is not None and op in ("pin", "unpin"):
            pinner.claim(*span)

    def _targets(self) -> tuple[list, list]:
        """(suggestions, auto-pins) the keys act on: those the cursor or the selection
        touches; else every suggestion in view."""
        span = self.app.view.selection()
        if span is None:
            return [], []
        a, b = span
        hit = [x for x in self.suggestions if x[0] < b and a < x[1]]
        auto = [(x, y) for x, y in self.pinner.owned() if x < b and a < y]  # whole words
        if hit or auto:
            return hit, auto
        seen = visible_tokens(self.app.view)
        if seen is None:
            return [], []
        k = bisect.bisect_left(self.suggestions, (seen[0],))
        return [x for x in self.suggestions[max(0, k - 1):] if x[0] < seen[1] and seen[0] < x[1]], []

    def _note(self, op: str, a: int, b: int, score: float | None) -> None:
        args = {"range": [a, b], **({"score": round(float(score), 4)} if score is not None else {})}
        tagging(self.app.session).note(op, args, streaming=self.app.generating)

    def _judged(self):
        """The suggestions and auto-pins an accept or reject applies to, or None (after saying
        why) when there is no picker or nothing to judge."""
        if self._no_picker():
            return None
        hit, auto = self._targets()
        if not hit and not auto:
            self.app.notify("No suggestion here or in view (suggestions are underlined)", severity="warning")
            return None
        return hit, auto

    def accept(self) -> None:
        if (judged := self._judged()) is None:
            return
        hit, auto = judged
        app, done = self.app, 0
        for a, b, score in hit:
            if not app.apply(lambda: self.mark("pin", (a, b))):
                break  # refused (the budget): the rest stay suggestions
            self._note("accept", a, b, score)
            done += 1
        for a, b in auto:
            self.pinner.claim(a, b)
            self._note("accept", a, b, None)
        app.view.clear_selection()
        app.refresh_stream()
        what = [f"{done} suggestion{'s' * (done != 1)} pinned"] if hit else []
        what += [f"{len(auto)} auto-pin{'s' * (len(auto) != 1)} made yours"] if auto else []
        app.notify("accepted: " + ", ".join(what))

    def reject(self) -> None:
        if (judged := self._judged()) is None:
            return
        hit, auto = judged
        for a, b, score in hit:
            self._note("reject", a, b, score)
        rejected = {(a, b) for a, b, _ in hit}
        self.suggestions = [x for x in self.suggestions if (x[0], x[1]) not in rejected]
        app = self.app
        for a, b in auto:
            if app.apply(lambda: self.mark("unpin", (a, b))):
                self._note("reject", a, b, None)
        app.view.clear_selection()
        app.refresh_stream()
        gone = hit + auto
        words = ", ".join(repr(app.session.text(a, b).strip()) for a, b, *_ in gone[:4])
        app.notify(f"rejected {len(gone)}: {words}" + (" …" if len(gone) > 4 else ""))

    def toggle_auto_pin(self) -> None:
        if self._no_picker():
            return
        self.auto_pin = not self.auto_pin
        pinner = self.pinner
        with pinner.lock:
            pinner.pinning = self.auto_pin
        self.app.refresh_stream()
        self.app.notify("auto-pin on: the picker pins what it scores high as the text streams (A turns it off)"
                    if self.auto_pin else "auto-pin off: the picker suggests, you decide (a accepts, x rejects)")

    def _no_picker(self) -> bool:
        if self.picker is None:
            self.app.notify("No picker: start with heedful chat --picker DIR (made by heedful learn)", severity="warning")
            return True
        return False

