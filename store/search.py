"""Full-text search over session text (FTS5 on word-aligned chunks; see schema.py).

Each occurrence is a hit, narrowed from its chunk to the tokens that hold the text, so it
can be handed to `recall` as a range. Two passes:
- FTS5 (unicode61 tokenizer: case and diacritics ignored, punctuation separates words), the
  text as one phrase whose last word may be the start of a word ("vault co" finds "vault
  code", "48" finds "4821"), through the index;
- when that finds nothing, a scan of the chunks for the text anywhere inside a word ("821",
  "ault"), case ignored for ASCII letters, so what a person remembers of a word is found.
A phrase that straddles two chunks is not found.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from heedful.store.state import load_state


@dataclass
class Hit:
    session: int
    start: int  # token range [start, end)
    end: int
    text: str  # the tokens' text
    state: str  # evicted | retained | pinned | dropped | mixed

    def to_json(self) -> dict:
        return {"session": self.session, "range": [self.start, self.end], "text": self.text, "state": self.state}


def fts_query(text: str) -> str:
    """The user's text as one FTS5 phrase, no operators, so any text is a valid query; the
    last word matches as a prefix unless the text ends in a space."""
    phrase = '"' + text.replace('"', '""') + '"'
    return phrase if text[-1:].isspace() else phrase + " *"


def _narrow(rows, needle: str, word_start: bool) -> list[tuple[int, int]]:
    """Token ranges (absolute) of every case-insensitive occurrence of needle in rows, in
    order, not overlapping, starting a word if word_start (what the index matched); [] if
    there is none (the index matched words, the text as typed is not there: "vault:code"),
    None if casefold changes lengths (no offsets: the chunk is the hit)."""
    texts = [r[2] for r in rows]
    full = "".join(texts)
    hay, pin = full.casefold(), needle.casefold()
    if not pin or len(hay) != len(full):
        return None
    ends, pos = [], 0  # ends[k]: the character just after token k
    for t in texts:
        pos += len(t)
        ends.append(pos)
    out, at = [], hay.find(pin)
    while at >= 0:
        if word_start and pin[0].isalnum() and at and hay[at - 1].isalnum():
            at = hay.find(pin, at + 1)
            continue
        first = bisect.bisect_right(ends, at)
        last = bisect.bisect_left(ends, at + len(pin))
        out.append((rows[first][0], rows[min(last, len(rows) - 1)][0] + 1))
        at = hay.find(pin, at + len(pin))
    return out


def search(store, text: str, session_id: int | None = None, limit: int = 20) -> list[Hit]:
    if not text.strip() or "\x00" in text:  # SQLite's text ends at a NUL: no session text holds one
        return []
    where = " AND c.session = ?" if session_id is not None else ""
    tail = ([session_id] if session_id is not None else []) + [limit]
    fts = ("SELECT c.session, c.start_idx, c.end_idx FROM chunks_fts f JOIN chunks c ON c.id = f.rowid "
           "WHERE chunks_fts MATCH ?" + where + " ORDER BY c.session, c.start_idx LIMIT ?")
    scan = ("SELECT c.session, c.start_idx, c.end_idx FROM chunks c WHERE instr(lower(c.text), lower(?)) > 0"
            + where + " ORDER BY c.session, c.start_idx LIMIT ?")
    with store.guard():
        found = store.conn.execute(fts, [fts_query(text)] + tail).fetchall()
        hits = _hits(store, found, text, True, limit) if found else []
        if not hits:  # not as words: anywhere inside a word, or punctuation the index skips
            found = store.conn.execute(scan, [text] + tail).fetchall()
            hits = _hits(store, found, text, False, limit)
    return hits


def _hits(store, found, text: str, word_start: bool, limit: int) -> list[Hit]:
    """Every occurrence of the text as typed in the chunks found (none: no hit)."""
    states, hits = {}, []
    for sid, a, b in found:
        rows = list(store.token_rows(sid, a, b))
        if sid not in states:
            row = store.conn.execute("SELECT state FROM sessions WHERE id = ?", (sid,)).fetchone()
            states[sid] = load_state(row[0], f"{store.path}: session {sid}")
        spans = _narrow(rows, text, word_start)
        for lo, hi in spans if spans is not None else [(a, b)]:
            st = {states[sid].token_state(i) for i in range(lo, hi)}
            hits.append(Hit(sid, lo, hi, "".join(r[2] for r in rows if lo <= r[0] < hi),
                            st.pop() if len(st) == 1 else "mixed"))
            if len(hits) == limit:
                return hits
    return hits
