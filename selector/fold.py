"""Folding: a span of text held as a short gist instead of its own rows.

The gist (the person's words, or a short one the model writes) is encoded in place while the
span is still resident, so its rows read the span (gist tokens in the sense of Mu et al.);
then the span's rows leave and the gist is kept like a pin. The stream keeps the original
text: gist tokens are not stream tokens. Their rows sit in the resident order right after the
span's last token, under order keys that are fractions inside the span (b - 1 + (k + 1) /
(m + 1) for gist token k of m), so the policy keeps them with the folded span, and a
compacted position puts the gist where the text stood. `unfold` lets the gist go and
re-encodes the original in place, pinned.

`Folding` is a base of Session (session.py) and uses its state (`_folds`: (a, b) -> Fold).
"""

from __future__ import annotations

from dataclasses import dataclass

from heedful.errors import HeedfulError, TargetError
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


class Folding:
    def folds(self) -> list[tuple[int, int, str]]:
        """The folded spans and their gists, in stream order."""
        with self._op():
            return [(a, b, f.gist) for (a, b), f in sorted(self._folds.items())]

    def summary_rows(self) -> int:
        """Automatic fold's summary rows now resident (autofold.py)."""
        with self._op():
            return len(self._autofold.keys) if self._autofold is not None else 0

    def _folded(self) -> Spans:
        out = Spans()
        for a, b in self._folds:
            out.add(a, b)
        return out

    def _gist_rows(self, without=()) -> int:
        """Fixed rows besides sinks and pins: the folds' gists and the automatic summaries' room."""
        return sum(len(f.ids) for span, f in self._folds.items() if span not in without) + self.config.fold_budget

    def _check_not_folded(self, op: str, ranges) -> None:
        for a, b in ranges:
            for fa, fb in self._folds:
                if a < fb and fa < b:
                    raise TargetError(f"{op} [{a}, {b}): tokens [{fa}, {fb}) are folded (unfold them first)")

    def fold(self, target, gist: str | None = None, occurrence=None) -> list[tuple[int, int]]:
        """Holds a resident span as a short gist (`gist`, or one the model writes): logged as
        {"op": "fold", "range": [a, b], "gist": ...} with the gist in force."""
        with self._op():
            ranges = self.resolve(target, occurrence)
            if len(ranges) != 1:
                raise TargetError(f"fold: the target matches {len(ranges)} spans; fold one at a time")
            (a, b), n = ranges[0], len(self.stream)
            self._check_not_folded("fold", ranges)
            if self._dropped.overlaps(a, b):
                raise TargetError(f"fold [{a}, {b}): overlaps dropped text")
            if b - a < 2:
                raise TargetError(f"fold [{a}, {b}): a single token has nothing to fold")
            resident = set(self.resident_tokens)
            if not all(t in resident for t in range(a, b)):
                raise TargetError(f"fold [{a}, {b}): the span must be resident to be read (recall it first)")
            if self.cache.has_recurrent_layers:
                raise HeedfulError("fold needs a model whose layers are all full attention")
            if gist is None:
                gist = self._write_gist(a, b)
            if not isinstance(gist, str) or not gist.strip():
                raise TargetError(f"fold [{a}, {b}): empty gist")
            try:
                check_text("gist", gist)
            except ValueError as e:
                raise TargetError(str(e)) from None
            ids = tuple(self.tokenizer(gist, add_special_tokens=False)["input_ids"])
            if not 0 < len(ids) < b - a:
                raise TargetError(f"fold [{a}, {b}): a gist of {len(ids)} tokens must be shorter than the "
                                  f"{b - a} tokens it folds")
            pins = self._pins.copy()
            pins.remove(a, b)
            self.policy.check_pins(pins, extra=self._gist_rows() + len(ids))
            self._event("fold", {"range": [a, b], "gist": gist})
            self._pins = pins
            self._fold_in(a, b, Fold(gist, ids), n)
            return [(a, b)]

    def _fold_in(self, a: int, b: int, fold: Fold, n: int) -> None:
        """Encodes the gist after the resident span, then the span's rows leave; the newest
        token is re-encoded so that the next-token logits read the gist, not the span."""
        logits = self.next_logits
        self._folds[(a, b)] = fold
        keys = fold.keys(a, b)
        self._reencode(keys, dict(zip(keys, fold.ids)))
        self._cut_resident([t for t in self.resident_tokens if not (type(t) is int and a <= t < b)], "fold")
        newest = n - 1
        if newest >= b and newest in set(self.resident_tokens):
            self._reencode([newest])
        elif newest >= b:  # the newest token is dropped: its logits stand
            self.next_logits = logits

    def unfold(self, target, occurrence=None) -> list[tuple[int, int]]:
        """Lets the gist of every fold the target touches go and re-encodes the original in
        place, pinned: {"op": "unfold", "range": [a, b]} per fold."""
        with self._op():
            ranges = self.resolve(target, occurrence)
            spans = sorted({(fa, fb) for a, b in ranges for fa, fb in self._folds if a < fb and fa < b})
            if not spans:
                raise TargetError(f"unfold {ranges[0] if len(ranges) == 1 else ranges}: nothing folded there")
            pins = self._pins.copy()
            for fa, fb in spans:
                pins.add(fa, fb)
            self.policy.check_pins(pins, extra=self._gist_rows(without=spans))
            for fa, fb in spans:
                self._event("unfold", {"range": [fa, fb]})
            gone = set()
            for span in spans:
                gone |= set(self._folds.pop(span).keys(*span))
            self._cut_resident([t for t in self.resident_tokens if t not in gone], "unfold")
            self._pins = pins
            self._reencode_in_place([t for fa, fb in spans for t in range(fa, fb)])
            return spans

    def _write_gist(self, a: int, b: int) -> str:
        """A short gist the model writes for the span: greedy, after the span's text and
        "In short:", in a scratch session that records nothing."""
        from heedful.selector.session import Session

        span = self.stream.text(a, b)
        room = min(GIST_MAX_TOKENS, b - a - 1)
        rows = min(b - a + 32, self.max_positions or b - a + 32)
        scratch = Session(self.model, self.tokenizer, gated=self.gated, window=rows, budget=rows, sinks=0)
        scratch.prompt(span + GIST_PROMPT)
        eos = self.tokenizer.eos_token_id
        text = ""
        for tok in scratch.generate(room):
            if tok.id == eos or "\n" in tok.text:
                text += tok.text.split("\n")[0] if tok.id != eos else ""
                break
            text += tok.text
        gist = text.strip()
        while gist and len(self.tokenizer(gist, add_special_tokens=False)["input_ids"]) >= b - a:
            gist = gist.rsplit(" ", 1)[0] if " " in gist else ""
        if not gist:
            raise TargetError(f"fold [{a}, {b}): the model wrote no gist; give one")
        return gist
