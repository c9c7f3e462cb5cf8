"""Exports of a session: the event log (a replay script), or its tokens as md, txt or jsonl.

What: events (the log, JSON Lines only), pinned (the pinned tokens), retained (what the
model sees now: every token whose KV rows are resident) or all (the whole stream, each
token with its state).

Formats:
- jsonl: one object per token, {"index", "id", "text", "source", "state"};
- txt: the tokens' text exactly; where the selection skips tokens a line
  "[… N tokens …]" stands for them (all: the stream's text, nothing added);
- md: a heading, then one section per run of tokens, its text in a fenced block (the
  fence is longer than any run of backticks inside, so the text comes out unchanged). A
  conversation (tokens of chat turns: sources system, user, markup) is written by turn: a
  section per turn named by its role, with its tokens' states, its content fenced (the
  template's markup left out); `pinned` and `retained` name each run's roles.

output_file() is where an export lands: never on the database it reads, onto an existing
file only when forced, whole or not at all (a temporary file beside it, renamed).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat
import tempfile
from json.encoder import encode_basestring  # C-accelerated, ensure_ascii=False

from heedful.errors import HeedfulError

WHATS = ("pinned", "retained", "all", "events")
FORMATS = ("md", "txt", "jsonl")


def token_states(state, n: int) -> list[str]:
    """The state of each token index: sink, pinned, retained, evicted, folded or dropped."""
    out = ["retained"] * n
    folded = [(a, b) for a, b in getattr(state, "folds", {})]
    for name, spans in (("evicted", state.evicted), ("folded", folded), ("pinned", state.pins),
                        ("dropped", state.dropped)):
        for a, b in spans:
            a, b = min(a, n), min(b, n)
            out[a:b] = [name] * (b - a)
    for i in range(min(state.sinks, n)):
        if out[i] == "retained":
            out[i] = "sink"
    return out


SELECT = {
    "all": lambda s: True,
    "pinned": lambda s: s == "pinned",
    "retained": lambda s: s in ("retained", "pinned", "sink"),
}


def write_events(store, session_id: int, out) -> int:
    events = store.events(session_id)
    for e in events:
        out.write(json.dumps(e, ensure_ascii=False) + "\n")
    return len(events)


def export(store, session_id: int | None, what: str, fmt: str, out) -> int:
    """Writes the export to `out` (a text stream); returns the number of items written."""
    if what not in WHATS:
        raise HeedfulError(f"--what {what!r}: expected one of {', '.join(WHATS)}")
    if fmt not in FORMATS:
        raise HeedfulError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    info = store.session(session_id)
    if what == "events":
        if fmt != "jsonl":
            raise HeedfulError("--what events is written as JSON Lines (the replay format): use --format jsonl")
        return write_events(store, info.id, out)
    data = store.load(info.id)
    return write_tokens(out, what, fmt, ids=data.token_ids, texts=data.token_texts, sources=data.token_sources,
                        state=info.state, heading=f"Session {info.id}: {info.title or ''}", model=info.model)


def write_tokens(out, what: str, fmt: str, *, ids, texts, sources, state, heading: str, model: str) -> int:
    """Writes the tokens of a stream that `what` selects, given its StreamState (pins, drops,
    evictions, sinks); returns the number of tokens written. The TUI calls this too for a
    session that has no store."""
    states = token_states(state, len(texts))
    keep = SELECT[what]
    # what the model sees of a folded span is its gist: --what retained writes it in its place
    gists = {k: g for k, g in getattr(state, "folds", {}).items() if what == "retained" and k[1] <= len(texts)}
    if fmt == "jsonl":
        n, folds = 0, sorted(gists.items())
        for i, (tid, text, src, st) in enumerate(zip(ids, texts, sources, states)):
            while folds and folds[0][0][0] <= i:
                (a, b), g = folds.pop(0)
                out.write(f'{{"fold": [{a}, {b}], "gist": {encode_basestring(g)}, "state": "gist"}}\n')
            if keep(st):
                out.write(f'{{"index": {i}, "id": {tid}, "text": {encode_basestring(text)}, '
                          f'"source": "{src}", "state": "{st}"}}\n')
                n += 1
        return n
    runs = _runs(states, keep, split_by_state=(fmt == "md" and what == "all"), label=what)
    runs = sorted(runs + [(a, b, "gist") for a, b in gists])
    if fmt == "txt":
        at = 0
        for a, b, label in runs:
            if a > at:
                out.write(f"\n[… {a - at} tokens …]\n")
            out.write(gists[(a, b)] if label == "gist" else "".join(texts[a:b]))
            at = b
        if runs and at < len(texts):
            out.write(f"\n[… {len(texts) - at} tokens …]\n")
        return sum(b - a for a, b, label in runs if label != "gist")
    # md
    chat = bool(CHAT_SOURCES & set(sources))
    if chat:
        if what != "all":
            turns = _role_turns(sources) or [(0, len(sources), "markup")]
            runs = [r for a, b, st in runs for r in _split_by_role(a, b, st, turns)]
    out.write(f"# {heading}\n\n")
    out.write(f"{what} tokens of {len(texts)}; model {model}; pinned {state.pins.total()}, "
              f"evicted {state.evicted.total()}\n")
    folds = getattr(state, "folds", {})
    if chat and what == "all":
        return _write_turns(out, texts, sources, states)
    for a, b, st in runs:
        text = gists[(a, b)] if st == "gist" else "".join(texts[a:b])
        ticks = max((len(m) for m in re.findall(r"`+", text)), default=0)
        fence = "`" * max(3, ticks + 1)
        label = {"gist": "folded, held as its gist",
                 "folded": f"folded, held as the gist {folds.get((a, b), '')!r}"}.get(st, st)
        out.write(f"\n## tokens [{a}, {b}) {label}\n\n{fence}text\n{text}\n{fence}\n")
    return sum(b - a for a, b, st in runs if st != "gist")


CHAT_SOURCES = {"system", "user", "markup"}
ROLE_OF = {"system": "system", "user": "user", "generated": "assistant", "prompt": "prompt", "recalled": "recalled"}


def _role_turns(sources) -> list[tuple[int, int, str]]:
    """A conversation's turns [a, b) with their role: a turn starts where its content starts
    (the markup before the first content joins the first turn; markup after a content joins it)."""
    out: list[tuple[int, int, str]] = []
    role = None
    for i, src in enumerate(sources):
        r = ROLE_OF.get(src)
        if r is not None and r != role:
            if out:
                out[-1] = (out[-1][0], i, out[-1][2])
            out.append((0 if not out else i, len(sources), r))
            role = r
    return out


def _split_by_role(a: int, b: int, label: str, turns) -> list[tuple[int, int, str]]:
    """A run [a, b) cut where the turns change, each piece labelled with its turn's role."""
    out = []
    for ta, tb, role in turns:
        lo, hi = max(a, ta), min(b, tb)
        if lo < hi:
            out.append((lo, hi, f"{role}, {label}"))
    return out


def _write_turns(out, texts, sources, states) -> int:
    """md of a whole conversation: a section per turn, its role, its states, its content."""
    for a, b, role in _role_turns(sources):
        counts: dict[str, int] = {}
        for st in states[a:b]:
            counts[st] = counts.get(st, 0) + 1
        text = "".join(t for t, src in zip(texts[a:b], sources[a:b]) if src != "markup")
        ticks = max((len(m) for m in re.findall(r"`+", text)), default=0)
        fence = "`" * max(3, ticks + 1)
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        out.write(f"\n## {role} (tokens [{a}, {b}): {shown})\n\n{fence}text\n{text}\n{fence}\n")
    return len(texts)


def _runs(states, keep, split_by_state: bool, label: str) -> list[tuple[int, int, str]]:
    """Maximal runs [a, b) of kept tokens with a label: their state when split_by_state."""
    runs: list[tuple[int, int, str]] = []
    start = None
    for k, st in enumerate(states):
        if start is not None and (not keep(st) or (split_by_state and st != states[start])):
            runs.append((start, k, states[start] if split_by_state else label))
            start = None
        if start is None and keep(st):
            start = k
    if start is not None:
        runs.append((start, len(states), states[start] if split_by_state else label))
    return runs


def _database_files(db) -> list[str]:
    base = os.path.realpath(db)
    return [base] + [base + tail for tail in ("-wal", "-shm", "-journal")]


def _check_output(path: str, real: str, force: bool, protect) -> bool:
    """Refuses an output path (one line); returns True when it is an existing file to
    replace, False for a new one. Special files (/dev/null, a pipe) are not checked here."""
    for db in protect:
        names = _database_files(db)
        if real in names or (os.path.exists(real) and any(
                os.path.exists(n) and os.path.samefile(real, n) for n in names)):
            raise HeedfulError(f"-o {path}: is the database {db} (or one of its -wal/-shm files): "
                               "choose another output file")
    if os.path.isdir(real):
        raise HeedfulError(f"-o {path}: is a folder, not a file")
    if os.path.exists(real):
        if not force:
            raise HeedfulError(f"-o {path}: exists (--force to overwrite it)")
        return True
    folder = os.path.dirname(real)
    if not os.path.isdir(folder):
        while not os.path.exists(folder) and folder != os.path.dirname(folder):
            folder = os.path.dirname(folder)
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise HeedfulError(f"-o {path}: {folder} is not a folder")
        raise HeedfulError(f"-o {path}: no such folder {os.path.dirname(real)}")
    return False


@contextlib.contextmanager
def output_file(path, *, force: bool = False, protect=()):
    """A text stream for an export to `path` (links followed): refused (one-line
    HeedfulError) when it is one of the `protect` databases or their -wal/-shm files, a
    folder, under a missing folder or a file, or an existing file without `force`. It is
    written to a temporary file in the same folder and renamed over `path` when the block
    ends without an error; on an error nothing is left. A special file (/dev/null, a pipe)
    is written to directly."""
    path = str(path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        with open(path, "w", encoding="utf-8", newline="") as f:
            yield f
        return
    real = os.path.realpath(path)
    existing = _check_output(path, real, force, protect)
    folder, name = os.path.split(real)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    except OSError as e:
        raise HeedfulError(f"-o {path}: cannot write in {folder}: {e.strerror}") from None
    try:
        if existing:
            mode = stat.S_IMODE(os.stat(real).st_mode)
        else:
            mask = os.umask(0)
            os.umask(mask)
            mode = 0o666 & ~mask
        os.fchmod(fd, mode)
        with io.open(fd, "w", encoding="utf-8", newline="") as f:
            yield f
        os.replace(tmp, real)
    except OSError as e:
        _unlink(tmp)
        raise HeedfulError(f"-o {path}: cannot write: {e.strerror}") from None
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
