"""What the person kept: a stored session's event log -> one label per token.

A token is positive when the person pinned it at some point (a pin, a recall, a prompt's
"pins") and did not drop it afterwards: unpinning later does not undo it (the person kept it
while it mattered), a drop does (the person threw it away), and a pin after a drop counts
again. Everything else is negative. Copies made by `recall` with "append" (source
"recalled") are left out (mask 0): they repeat text that is labelled where it first stood.
A rewind (and a resume after a crash, which cuts the stream to what reached the disk)
forgets what was said about the tokens past the cut.

A picker's own choices are not the person's (`heedful chat --picker`, `--auto-pin`):

- a suggestion the person accepted (`{"op": "accept", "range": ...}`) is positive, one the
  person rejected (`"reject"`) negative, whatever came before (a later pin counts again);
- an auto-pin (a pin with `"by": "picker"`, a prompt's `"picker_pins"`) is left out (mask 0)
  while the person has said nothing of it: it is the picker's guess. The person unpinning
  it (an unpin without "by") rejects it: negative; pinning it, accepting it: positive;
  dropping it: negative. The picker's own unpins (for room) change nothing.
"""

from __future__ import annotations

PIN_OPS = ("pin", "recall")
NEVER, KEPT, THROWN, AUTO, REJECTED = 0, 1, 2, 3, 4


def token_labels(events: list[dict], n: int, sources: list[str] | None = None) -> tuple[list[int], list[int], int]:
    """(labels, mask, marks): labels 1/0 per token of a stream of n tokens, mask 0 for
    tokens left out, marks the number of the person's pin-like events, accepts and
    rejects seen."""
    state = [NEVER] * n
    marks = 0

    def tokens(rng):
        return range(max(0, int(rng[0])), min(n, int(rng[1])))

    def mark(rng, value):
        for t in tokens(rng):
            state[t] = value

    def auto(rng):  # the picker pinned it: the person's own judgement stands
        for t in tokens(rng):
            if state[t] == NEVER:
                state[t] = AUTO

    for ev in events:
        op = ev.get("op")
        picker = ev.get("by") == "picker"
        if op == "prompt":
            by_picker = {t for r in ev.get("picker_pins", ()) for t in tokens(r)}
            for r in ev.get("pins", ()):
                for t in tokens(r):
                    state[t] = AUTO if t in by_picker else KEPT
                marks += any(t not in by_picker for t in tokens(r))
        elif op in PIN_OPS and "range" in ev:
            if picker:
                auto(ev["range"])
            else:
                mark(ev["range"], KEPT)
                marks += 1
        elif op == "accept" and "range" in ev:
            mark(ev["range"], KEPT)
            marks += 1
        elif op == "reject" and "range" in ev:
            mark(ev["range"], REJECTED)
            marks += 1
        elif op == "unpin" and "range" in ev and not picker:
            for t in tokens(ev["range"]):
                if state[t] == AUTO:
                    state[t] = REJECTED
        elif op == "drop" and "range" in ev:
            mark(ev["range"], THROWN)
        elif op == "rewind":
            mark((ev.get("index", n), n), NEVER)
        elif op == "resume":
            mark((ev.get("tokens", n), n), NEVER)
    labels = [1 if s == KEPT else 0 for s in state]
    mask = [0 if state[t] == AUTO or (sources is not None and sources[t] == "recalled") else 1 for t in range(n)]
    return labels, mask, marks
