"""The token state a store keeps for each session: pins, drops and evicted tokens.

It follows the recorder calls in the order the engine makes them, so the store can say,
for every token index, whether it is pinned, resident or evicted without loading a model.
Evictions are read from what the engine reports (`evicted`); two things the engine does
not report are mirrored here, each with the engine's own rule:

- pin/recall of a range that is not wholly resident re-encodes it as new tokens at the
  end of the stream and pins those (Session._mark): the new range is recorded as a recall;
- rewind(i) re-encodes the freed window [i - window, i) minus dropped tokens
  (Session.rewind), so those tokens are resident again.

After a resume the engine rebuilds the resident set itself; `reset_resident` takes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from heedful.spans import Spans


@dataclass
class StreamState:
    tokens: int = 0  # stream length
    window: int = 1
    sinks: int = 0
    pins: Spans = field(default_factory=Spans)
    dropped: Spans = field(default_factory=Spans)
    evicted: Spans = field(default_factory=Spans)  # tokens whose KV rows were freed
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
                args = args.get("config", {})
            self.window = int(args.get("window") or self.window)
            self.sinks = int(args.get("sinks") or 0)
        elif op in ("pin", "recall"):
            a, b = args["range"]
            if self._op_start != self.tokens:  # the first range of a new operation
                self._op_start, self._pending = self.tokens, 0
            if not self.evicted.overlaps(a, b):
                self.pins.add(a, b)
                return None
            start = self.tokens + self._pending
            self._pending += b - a
            self.pins.add(start, start + b - a)
            return start, start + b - a
        elif op == "unpin":
            self.pins.remove(*args["range"])
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
        if index == 0:
            return
        self.dropped.remove(index - 1, index)
        back = Spans([(max(0, index - self.window), index)])
        for a, b in self.dropped:
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
                "evicted": self.evicted.to_list()}

    @classmethod
    def from_json(cls, d: dict) -> "StreamState":
        return cls(tokens=d.get("tokens", 0), window=d.get("window", 1), sinks=d.get("sinks", 0),
                   pins=Spans(d.get("pins", ())), dropped=Spans(d.get("dropped", ())),
                   evicted=Spans(d.get("evicted", ())))

    def clipped(self, n: int) -> "StreamState":
        """This state cut to a stream of n tokens (the tokens a crash left on disk)."""
        s = StreamState.from_json(self.to_json())
        s.tokens = min(s.tokens, n)
        for spans in (s.pins, s.dropped, s.evicted):
            spans.clip(n)
        return s

    def token_state(self, i: int) -> str:
        if i in self.dropped:
            return "dropped"
        if i in self.evicted:
            return "evicted"
        if i in self.pins or i < self.sinks:
            return "pinned" if i in self.pins else "sink"
        return "retained"
