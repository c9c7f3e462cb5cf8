"""Folding: a span of text held as a short gist instead of its own rows.

The gist (the person's words, or a short one the model writes) is encoded in place while the
span is still resident, so its rows read the span (gist tokens in the sense of Mu et al.);
then the span's rows leave and the gist is kept like a pin. The stream keeps the original
text: gist tokens are not stream tokens. Their rows sit in the resident order right after the
span's last token, under order keys that are fractions inside the span (b - 1 + (k + 1) /
(m + 1) for gist token k of m), so the policy keeps them with the folded span, and a
compacted position puts the gist where the text stood. `unfold` lets the gist go and
re-encodes the original in place, pinned.

`Folds` owns the folds' state; the session's fold and unfold operations (session.py) make
and undo them, through the resident rows' owner (residency.py) for the re-encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from heedful.errors import TargetError
from heedful.limits import check_text
from heedful.spans import Spans

GIST_PROMPT = "\nIn short:"
GIST_MAX_TOKENS = 16


@dataclass(frozen=True)
class Fold:
    gist: str
    ids: tuple[int, ...]

    def keys(self, a: int, b: int) -> list[float]:
        m = len(self.ids)
        return [b - 1 + (k + 1) / (m + 1) for k in range(m)]


class Folds:
    """The folds of a session: folded span (a, b) -> its Fold. The operations that make and
    undo them are the session's (session.py: fold, unfold); this owns their state."""

    def __init__(self):
        self.by_span: dict[tuple[int, int], Fold] = {}

    def __bool__(self) -> bool:
        return bool(self.by_span)

    def __iter__(self):
        return iter(sorted(self.by_span))

    def listed(self) -> list[tuple[int, int, str]]:
        """The folded spans and their gists, in stream order."""
        return [(a, b, f.gist) for (a, b), f in sorted(self.by_span.items())]

    def spans(self) -> Spans:
        out = Spans()
        for a, b in self.by_span:
            out.add(a, b)
        return out

    def gist_rows(self, without=()) -> int:
        """Rows the gists hold (of the folds not in `without`)."""
        return sum(len(f.ids) for span, f in self.by_span.items() if span not in without)

    def check_not_folded(self, op: str, ranges) -> None:
        for a, b in ranges:
            for fa, fb in self.by_span:
                if a < fb and fa < b:
                    raise TargetError(f"{op} [{a}, {b}): tokens [{fa}, {fb}) are folded (unfold them first)")

    def touching(self, ranges) -> list[tuple[int, int]]:
        return sorted({(fa, fb) for a, b in ranges for fa, fb in self.by_span if a < fb and fa < b})

    def add(self, a: int, b: int, fold: Fold) -> dict:
        """Records a fold; returns its gist rows' keys -> token ids."""
        self.by_span[(a, b)] = fold
        keys = fold.keys(a, b)
        return dict(zip(keys, fold.ids))

    def remove(self, span: tuple[int, int]) -> set:
        """Forgets a fold; returns its gist rows' keys."""
        return set(self.by_span.pop(span).keys(*span))

    def cut(self, index: int) -> None:
        """A rewind to [0, index): the folds that reach past its last token go."""
        for span in [span for span in self.by_span if span[1] > max(index - 1, 0)]:
            del self.by_span[span]

    def holds(self, key) -> bool:
        """Whether a gist row's key lies in a fold."""
        return any(a <= key < b for a, b in self.by_span)


def check_gist(a: int, b: int, gist, tokenizer) -> tuple[int, ...]:
    """A gist's token ids, refused in one line when it is empty, too long or longer than the span."""
    if not isinstance(gist, str) or not gist.strip():
        raise TargetError(f"fold [{a}, {b}): empty gist")
    try:
        check_text("gist", gist)
    except ValueError as e:
        raise TargetError(str(e)) from None
    ids = tuple(tokenizer(gist, add_special_tokens=False)["input_ids"])
    if not 0 < len(ids) < b - a:
        raise TargetError(f"fold [{a}, {b}): a gist of {len(ids)} tokens must be shorter than the "
                          f"{b - a} tokens it folds")
    return ids


def write_gist(scratch, span_text: str, a: int, b: int, eos: int | None, tokenizer) -> str:
    """A short gist the model writes for a span, in `scratch` (a session that records
    nothing): greedy, after the span's text and "In short:", up to the first line's end."""
    room = min(GIST_MAX_TOKENS, b - a - 1)
    scratch.prompt(span_text + GIST_PROMPT)
    text = ""
    for tok in scratch.generate(room):
        if tok.id == eos or "\n" in tok.text:
            text += tok.text.split("\n")[0] if tok.id != eos else ""
            break
        text += tok.text
    gist = text.strip()
    while gist and len(tokenizer(gist, add_special_tokens=False)["input_ids"]) >= b - a:
        gist = gist.rsplit(" ", 1)[0] if " " in gist else ""
    if not gist:
        raise TargetError(f"fold [{a}, {b}): the model wrote no gist; give one")
    return gist
