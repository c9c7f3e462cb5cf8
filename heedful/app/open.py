"""Opening sessions: a new one over a model, or a stored one resumed from the store.

The CLI, the TUI and replay all open sessions through here, so loading a model and
rebuilding an engine from the store happen in one place.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from heedful.app.script import check_config
from heedful.models.loading import EMBEDDED_MODEL_DIR, LoadedModel, load_model
from heedful.selector.compressor import FOLDER, META
from heedful.selector.recorder import NullRecorder
from heedful.selector.session import Session, SessionConfig


def open_session(model=None, dtype="auto", device=None, trust_remote_code=False, recorder=None, **settings):
    """Loads a model (None: the embedded one) and opens a session over it."""
    lm = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    return session_for(lm, recorder=recorder, **settings)


def fold_compressor_for(lm: LoadedModel, choice: str | None, block: int | None) -> str:
    """What --fold-compressor names, resolved: "mean", or a compressor folder. auto (None):
    the model folder's own fold_compressor/ when it pools blocks of this size, else mean."""
    if choice not in (None, "auto"):
        return choice if choice == "mean" else str(Path(choice).resolve())
    folder = EMBEDDED_MODEL_DIR if lm.name == "default" else Path(lm.name)
    meta = folder / FOLDER / META
    block = block or SessionConfig.fold_block
    try:
        theirs = json.loads(meta.read_text()).get("block") if meta.is_file() else None
    except (OSError, ValueError):
        theirs = None  # an unreadable folder of the model's: auto falls back to the mean
    if theirs == block:
        return str((folder / FOLDER).resolve())
    if theirs is not None:  # say why the model's own compressor is not used
        sys.stderr.write(f"heedful: note: {meta.parent} pools blocks of {theirs} tokens, not --fold-block {block}: "
                         "summaries are means\n")
    return "mean"


def session_for(lm: LoadedModel, *, recorder=None, **settings) -> Session:
    """A new session over a loaded model; settings given as None keep their defaults."""
    if settings.get("fold_budget"):
        settings["fold_compressor"] = fold_compressor_for(lm, settings.get("fold_compressor"),
                                                          settings.get("fold_block"))
    else:
        settings.pop("fold_compressor", None)
    config = SessionConfig(model=lm.name, **{k: v for k, v in settings.items() if v is not None})
    return Session(lm.model, lm.tokenizer, recorder=recorder, gated=lm.gated, config=config)


def clip_spans(spans, n: int) -> list[tuple[int, int]]:
    """The spans cut to the first n tokens."""
    return [(a, min(b, n)) for a, b in spans if a < n]


def restore_session(lm_model, tokenizer, gated, config: dict, ids, texts, sources, pins, dropped,
                    recorder, folds=()):
    """Session.restore, then tells the recorder which tokens the engine made resident."""
    s = Session.restore(lm_model, tokenizer, config=config, token_ids=ids, token_texts=texts,
                        token_sources=sources, pins=pins, dropped=dropped, folds=folds, recorder=recorder,
                        gated=gated)
    if hasattr(recorder, "reset_resident"):
        recorder.reset_resident(s.retained())
    return s


def resume(store, session_id: int | None = None, *, model: str | None = None, dtype="auto", device=None,
           trust_remote_code=False, lm=None, record: bool = True, atomic: bool = False, **settings):
    """Reopens a stored session: the engine is rebuilt from the stream, pins and drops in
    the store (Session.restore) and continues recording into the same session. `settings`
    (window, budget, ...) override the stored configuration; None values are ignored.
    `atomic`: the continuation is written only by its recorder's commit(store);
    `record=False`: nothing is recorded (a parallel run's ranks other than 0)."""
    data = store.load(session_id)
    info = data.info
    cfg = {**info.config, **{k: v for k, v in settings.items() if v is not None}}
    if lm is None:
        lm = load_model(model or cfg.get("model"), dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    cfg["model"] = lm.name
    check_config(cfg, "resume")
    if cfg.get("fold_budget") and cfg.get("fold_compressor", "mean") != "mean":  # absent: stored before, pooled by mean
        cfg["fold_compressor"] = fold_compressor_for(lm, cfg["fold_compressor"], cfg.get("fold_block"))
    rec = store.reopen(info.id, atomic=atomic) if record else NullRecorder()
    n = len(data.token_ids)
    rec.event("resume", {"tokens": n, "config": cfg})
    st = info.state
    return restore_session(lm.model, lm.tokenizer, lm.gated, cfg, data.token_ids, data.token_texts,
                           data.token_sources, list(st.pins), list(st.dropped), rec,
                           folds=[(a, b, g) for (a, b), g in sorted(st.folds.items())])
