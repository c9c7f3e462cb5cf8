"""The token state a store keeps for each session: pins, drops and evicted tokens.

It follows the recorder calls in the order the engine makes them, so the store can say,
for every token index, whether it is pinned, resident or evicted without loading a model.
Evictions are read from what the engine reports (`evicted`); two things the engine does
not report are mirrored here, each with the engine's own rule:

- pin/recall of a range that is not wholly resident re-encodes its missing tokens in place
  (Session._mark), so the range is pinned and resident again (undropped too); with
  "append" it is re-encoded as new tokens at the end of the stream and pins those: the
  new range is recorded as a recall;
- the "pins" of a prompt or a turn (say) are pinned before its tokens arrive;
- fold (a, b) holds the span as its gist (pins on it go; the engine reports the span's rows
  leaving), unfold re-encodes it in place, pinned; a rewind lets the folds it cuts go;
- rewind(i) re-encodes the freed window [i - window, i) minus dropped tokens
  (Session.rewind), so those tokens are resident again.

After a resume the engine rebuilds the resident set itself; `reset_resident` takes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from heedful.errors import HeedfulError
from heedful.spans import Spans


def json_object(text, where: str) -> dict:
    """A JSON-object column (config, state, an event's args), or a one-line HeedfulError
    that starts with `where` (the database, session and column)."""
    try:
        value = json.loads(text) if text not in (None, "") else {}
    except (TypeError, ValueError):
        raise HeedfulError(f"{where} is not JSON: {str(text)[:40]!r}") from None
    if not isinstance(value, dict):
        raise HeedfulError(f"{where} holds a JSON {type(value).__name__}, not an object: {str(text)[:40]!r}")
    return value


def load_state(text, where: str) -> "StreamState":
    """A session's stored state column; `where` names the database and session."""
    try:
        return StreamState.from_json(json_object(text, f"{where}: column state"))
    except ValueError as e:
        raise HeedfulError(f"{where}: column state: {e}") from None


def _fingerprints(d: dict) -> dict | None:
    v = d.get("fingerprints")
    if v is not None and not (isinstance(v, dict) and all(isinstance(x, str) for x in v.values())):
        raise ValueError(f"fingerprints is {v!r:.40}, not an object of strings")
    return v


def _whole(d: dict, key: str, default: int) -> int:
    v = d.get(key, default)
    if type(v) is not int or v < 0:
        raise ValueError(f"{key} is {v!r:.40}, not a whole number")
    return v


def _whole_number(x) -> bool:
    """A JSON integer: not true/false, not 2.0."""
    return isinstance(x, int) and not isinstance(x, bool)


def _spans(d: dict, key: str) -> Spans:
    v = d.get(key, [])
    if not isinstance(v, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(_whole_number(x) for x in p) and 0 <= p[0] <= p[1]
            for p in v):
        raise ValueError(f"{key} is {v!r:.40}, not a list of [start, end] index pairs")
    return Spans(v)


def _folds(d: dict) -> dict:
    v = d.get("folds", [])
    if not isinstance(v, list) or not all(
            isinstance(f, list) and len(f) == 3 and _whole_number(f[0]) and _whole_number(f[1]) and 0 <= f[0] < f[1]
            and isinstance(f[2], str) for f in v):
        raise ValueError(f"folds is {v!r:.40}, not a list of [start, end, gist]")
    return {(a, b): g for a, b, g in v}


@dataclass
class StreamState:
    tokens: int = 0  # stream length
    window: int = 1
    sinks: int = 0
    pins: Spans = field(default_factory=Spans)
    dropped: Spans = field(default_factory=Spans)
    evicted: Spans = field(default_factory=Spans)  # tokens whose KV rows were freed
    folds: dict = field(default_factory=dict)  # (a, b) -> gist: spans held as a gist (their tokens evicted)
    # the model's and tokenizer's fingerprints ({"model": ..., "tokenizer": ...}): a resume checks them
    fingerprints: dict | None = None
    _op_start: int = field(default=-1, repr=False)  # stream length when the current multi-range pin/recall began
    _pending: int = field(default=0, repr=False)  # tokens the current pin/recall will append

    # ---------------------------------------------------------------- recorder calls
    def event(self, op: str, args: dict) -> tuple[int, int] | None:
        """Applies an operation logged before its effect. For a pin/recall that re-encodes
        evicted text, returns the range [start, end) the new pinned tokens will occupy."""
        if op in ("config", "resume"):
            if op == "resume":  # the engine restarts from the first args["tokens"] tokens
                self.tokens = int(args["tokens"])
                for spans in (self.pins, self.dropped, self.evicted):
                    spans.clip(self.tokens)
                self.folds = {k: g for k, g in self.folds.items() if k[1] <= self.tokens}
                args = args.get("config", {})
            self.window = int(args.get("window") or self.window)
            self.sinks = int(args.get("sinks") or 0)
        elif op in ("prompt", "say"):
            for a, b in args.get("pins", ()):
                self.pins.add(a, b)
        elif op in ("pin", "recall"):
            a, b = args["range"]
            if self._op_start != self.tokens:  # the first range of a new operation
                self._op_start, self._pending = self.tokens, 0
            if not self.evicted.overlaps(a, b):
                self.pins.add(a, b)
                return None
            if not args.get("append"):  # re-encoded in place
                self.pins.add(a, b)
                self.dropped.remove(a, b)
                self.evicted.remove(a, b)
                return None
            start = self.tokens + self._pending
            self._pending += b - a
            self.pins.add(start, start + b - a)
            return start, start + b - a
        elif op == "unpin":
            self.pins.remove(*args["range"])
        elif op == "fold":
            a, b = args["range"]
            self.folds[(a, b)] = args["gist"]
            self.pins.remove(a, b)
        elif op == "unfold":
            a, b = args["range"]
            self.folds.pop((a, b), None)
            self.pins.add(a, b)
            self.evicted.remove(a, b)
        elif op == "drop":
            a, b = args["range"]
            self.pins.remove(a, b)
            self.dropped.add(a, b)
            self.evicted.add(a, b)
        elif op == "rewind":
            self.rewind(int(args["index"]))
        elif op == "set":  # a rewind re-encodes the window in force at that moment
            self.window = int(args.get("window") or self.window)
        return None

    def evicted_ranges(self, ranges, reason: str) -> None:
        if reason == "rewind":  # accounted for by rewind() itself
            return
        for a, b in ranges:
            self.evicted.add(a, b)

    def rewind(self, index: int) -> None:
        self.tokens = index
        for spans in (self.pins, self.dropped, self.evicted):
            spans.clip(index)
        self.folds = {k: g for k, g in self.folds.items() if k[1] <= max(index - 1, 0)}
        if index == 0:
            return
        self.dropped.remove(index - 1, index)
        back = Spans([(max(0, index - self.window), index)])
        for a, b in [*self.dropped, *self.folds]:
            back.remove(a, b)
        for a, b in back:
            self.evicted.remove(a, b)

    def reset_resident(self, resident: list[int]) -> None:
        """After a resume: everything not in `resident` (sorted indices) is evicted."""
        kept = Spans()
        for t in resident:
            kept.add(t, t + 1)
        self.evicted = kept.complement(self.tokens)

    # ---------------------------------------------------------------- persistence
    def to_json(self) -> dict:
        return {"tokens": self.tokens, "window": self.window, "sinks": self.sinks,
                "pins": self.pins.to_list(), "dropped": self.dropped.to_list(),
                "evicted": self.evicted.to_list(), "folds": [[a, b, g] for (a, b), g in sorted(self.folds.items())],
                **({"fingerprints": dict(self.fingerprints)} if self.fingerprints else {})}

    @classmethod
    def from_json(cls, d: dict) -> "StreamState":
        """The state to_json wrote; ValueError saying what is wrong with anything else."""
        if not isinstance(d, dict):
            raise ValueError(f"a JSON {type(d).__name__}, not an object")
        return cls(tokens=_whole(d, "tokens", 0), window=_whole(d, "window", 1), sinks=_whole(d, "sinks", 0),
                   pins=_spans(d, "pins"), dropped=_spans(d, "dropped"), evicted=_spans(d, "evicted"),
                   folds=_folds(d), fingerprints=_fingerprints(d))

    def clipped(self, n: int) -> "StreamState":
        """This state cut to a stream of n tokens (the tokens a crash left on disk)."""
        s = StreamState.from_json(self.to_json())
        s.tokens = min(s.tokens, n)
        for spans in (s.pins, s.dropped, s.evicted):
            spans.clip(n)
        s.folds = {k: g for k, g in s.folds.items() if k[1] <= n}
        return s

    def token_state(self, i: int) -> str:
        if i in self.dropped:
            return "dropped"
        if any(a <= i < b for a, b in self.folds):
            return "folded"
        if i in self.evicted:
            return "evicted"
        if i in self.pins or i < self.sinks:
            return "pinned" if i in self.pins else "sink"
        return "retained"
