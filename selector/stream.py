"""The token stream of a session: every token's id, text, source and first character, evicted
tokens too (the text is what targets, rewind, export and the UI read).

Kept small: ids and texts are shared objects (one per distinct id / piece), the offsets a
plain int64 array; the detokenizer keeps only a short tail of ids.
"""

from __future__ import annotations

import sys
from array import array

from heedful.selector.recorder import TokenRecord
from heedful.selector.targets import resolve
from heedful.selector.text import Detokenizer


class TokenStream:
    def __init__(self, tokenizer):
        self.ids: list[int] = []
        self.texts: list[str] = []
        self.sources: list[str] = []
        self.starts = array("q")  # first character of each token in the stream text
        self._shared_ids: dict[int, int] = {}
        self._detok = Detokenizer(tokenizer)

    def __len__(self) -> int:
        return len(self.ids)

    def text(self, start: int = 0, end: int | None = None) -> str:
        return "".join(self.texts[start:end])

    def append(self, tid: int, source: str, text: str | None = None) -> TokenRecord:
        """Adds a token (its text decoded incrementally unless given)."""
        tid = self._shared_ids.setdefault(tid, tid)  # ~36 -> 8 bytes a token: one int object per id
        piece = sys.intern(self._detok.push(tid) if text is None else text)
        self.starts.append(self.starts[-1] + len(self.texts[-1]) if self.starts else 0)
        self.ids.append(tid)
        self.texts.append(piece)
        self.sources.append(source)
        return TokenRecord(len(self.ids) - 1, tid, piece, source)

    def load(self, ids, texts, sources) -> None:
        """The stream as a store keeps it (a resume); the next decoded token follows it."""
        for tid, text, src in zip(ids, texts, sources):
            self.append(int(tid), src, text)
        self.continue_decoding()

    def preview(self, ids: list[int]) -> list[str]:
        """The texts `append` would give these ids now, without appending them."""
        detok = self._detok.fork()
        return [detok.push(t) for t in ids]

    def resolve_ahead(self, ids: list[int], targets) -> list[tuple[int, int]]:
        """The stream ranges that `targets` designate in tokens about to be appended: text
        (every occurrence) or a compiled regex (every match) in their text only, or (start,
        end) stream ranges, which must lie within the stream as it will be."""
        start, texts = len(self.ids), self.preview(ids)
        starts, at = [], 0
        for piece in texts:
            starts.append(at)
            at += len(piece)
        text, end = "".join(texts), start + len(ids)
        out = []
        for target in targets:
            if isinstance(target, (tuple, list)):
                out += resolve(tuple(target), "", [], end)
            else:
                out += [(a + start, b + start) for a, b in resolve(target, text, starts, len(ids), "all")]
        return out

    def truncate(self, index: int) -> None:
        """Cuts the stream back to tokens [0, index) (the lists stay the same objects: a view
        may hold them)."""
        del self.ids[index:], self.texts[index:], self.sources[index:]
        del self.starts[index:]
        self.continue_decoding()

    def continue_decoding(self) -> None:
        """The next decoded token follows the stream as it is now (after a cut or a restore)."""
        self._detok.reset(self.ids)

    def resolve(self, target, occurrence=None) -> list[tuple[int, int]]:
        """Token ranges a target designates (selector/targets.py)."""
        return resolve(target, self.text(), self.starts, len(self.ids), occurrence)

    def nbytes(self) -> int:
        """Bytes of RAM the columns hold, shared objects counted once."""
        columns = (self.ids, self.texts, self.sources, self.starts)
        total = sum(sys.getsizeof(c) for c in columns)
        seen: set[int] = set()
        for x in (*self.ids, *self.texts, *self.sources):
            if id(x) not in seen:
                seen.add(id(x))
                total += sys.getsizeof(x)
        return total
