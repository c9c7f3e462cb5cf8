"""Rebuilding a session from what a store keeps: the stream, pins, drops and folds."""

from __future__ import annotations

from heedful.selector.config import SessionConfig
from heedful.selector.fold import Fold
from heedful.selector.recorder import NullRecorder, Recorder
from heedful.spans import Spans


def restore(cls, model, tokenizer, *, config: SessionConfig | dict, token_ids: list[int],
            token_texts: list[str], token_sources: list[str], pins=(), dropped=(), folds=(),
            recorder: Recorder | None = None, gated: bool | None = None):
    """Rebuilds a session from a store: the stream, pins and drops are set, and the
    retained set (sinks + pins + window, minus drops and folds) is re-encoded in one
    pass; then each fold (a, b, gist) reads its span again and keeps its gist.
    Re-encoding gives those tokens fresh KV rows (each attends the retained tokens
    before it), which is not bit-identical to the rows they had when first processed.
    The recorder receives no config event and no tokens: the store has them."""
    if isinstance(config, dict):
        config = SessionConfig(**config)
    s = cls(model, tokenizer, config=config, recorder=NullRecorder(), gated=gated)
    with s._lock:
        for tid, text, src in zip(token_ids, token_texts, token_sources):
            s.stream.append(int(tid), src, text)
        s.stream.continue_decoding()
        for a, b in pins:
            s._pins.add(a, b)
        for a, b in dropped:
            s._dropped.add(a, b)
        n = len(s.token_ids)
        lo = max(0, n - s.config.window)
        folded = Spans()
        for a, b, _ in folds:
            folded.add(a, b)
        keep = [t for t in range(n) if (t >= lo or s.policy.is_fixed(t, s._pins)) and t not in s._dropped
                and t not in folded]
        if s._autofold is None:
            s._reencode(keep)
        else:
            _stream_tail(s, keep, lo, n, folded)
        for a, b, gist in folds:  # the span returns to be read, then its gist replaces it
            s._reencode(list(range(a, b)))
            ids = tuple(tokenizer(gist, add_special_tokens=False)["input_ids"])
            s._fold_in(a, b, Fold(gist, ids), n)
        s._peak = s.cache.resident()
    if recorder is not None:
        s.recorder = recorder
    return s


def _stream_tail(s, keep: list[int], lo: int, n: int, folded: Spans) -> None:
    """With automatic fold, the summary rows are rebuilt too: the fixed rows before the tail
    are re-encoded, then the tail (the R blocks the summaries stand for, a window before
    them, and the window) streams through the window again, as it first did, so its blocks
    are pooled by the session's compressor. The first window of the tail reads less than it
    first did (nothing before it but the fixed rows): the summaries are close, not equal."""
    c = s.config
    start = max(0, lo - c.fold_budget * c.fold_block - c.window) // c.fold_block * c.fold_block
    s._reencode([t for t in keep if t < start])
    tail = [t for t in range(start, n) if t not in s._dropped and t not in folded]
    step = s._chunk()
    for i in range(0, len(tail), step):
        part = tail[i : i + step]
        s._run(part, [s.stream.ids[t] for t in part], evict=True)
    s._evicted = 0  # the stream's evictions were counted by the session that made them
