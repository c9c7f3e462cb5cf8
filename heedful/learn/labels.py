"""What the person kept: a stored session's event log -> one label per token.

A token is positive when the person pinned it at some point (a pin, a recall, a prompt's
"pins") and did not drop it afterwards: unpinning later does not undo it (the person kept it
while it mattered), a drop does (the person threw it away), and a pin after a drop counts
again. Everything else is negative. Copies made by `recall` with "append" (source
"recalled") are left out (mask 0): they repeat text that is labelled where it first stood.
A rewind (and a resume after a crash, which cuts the stream to what reached the disk)
forgets what was said about the tokens past the cut.
"""

from __future__ import annotations

PIN_OPS = ("pin", "recall")


def token_labels(events: list[dict], n: int, sources: list[str] | None = None) -> tuple[list[int], list[int], int]:
    """(labels, mask, marks): labels 1/0 per token of a stream of n tokens, mask 0 for
    tokens left out, marks the number of pin-like events seen."""
    state = [0] * n  # 0 never marked, 1 pinned last, 2 dropped last
    marks = 0

    def mark(rng, value):
        a, b = max(0, int(rng[0])), min(n, int(rng[1]))
        for t in range(a, b):
            state[t] = value

    for ev in events:
        op = ev.get("op")
        if op == "prompt":
            for r in ev.get("pins", ()):
                mark(r, 1)
                marks += 1
        elif op in PIN_OPS and "range" in ev:
            mark(ev["range"], 1)
            marks += 1
        elif op == "drop" and "range" in ev:
            mark(ev["range"], 2)
        elif op == "rewind":
            mark((ev.get("index", n), n), 0)
        elif op == "resume":
            mark((ev.get("tokens", n), n), 0)
    labels = [1 if s == 1 else 0 for s in state]
    mask = [0 if sources is not None and sources[t] == "recalled" else 1 for t in range(n)]
    return labels, mask, marks
