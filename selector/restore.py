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
        s._reencode(keep)
        for a, b, gist in folds:  # the span returns to be read, then its gist replaces it
            s._reencode(list(range(a, b)))
            ids = tuple(tokenizer(gist, add_special_tokens=False)["input_ids"])
            s._fold_in(a, b, Fold(gist, ids), n)
        s._peak = s.cache.resident()
    if recorder is not None:
        s.recorder = recorder
    return s
