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
from heedful.errors import HeedfulError
from heedful.selector.compressor import FOLDER, META
from heedful.selector.compressor import digest as compressor_digest
from heedful.selector.recorder import NullRecorder
from heedful.selector.session import Session, SessionConfig


def open_session(model=None, dtype="auto", device=None, trust_remote_code=False, recorder=None, **settings):
    """Loads a model (None: the embedded one) and opens a session over it."""
    lm = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    return session_for(lm, recorder=recorder, **settings)


def _model_folder(lm: LoadedModel) -> Path | None:
    """The local folder the model was loaded from (None for a hub id)."""
    if lm.name == "default":
        return EMBEDDED_MODEL_DIR
    folder = Path(lm.name).expanduser()
    return folder if folder.is_dir() else None


def _note(text: str) -> None:
    sys.stderr.write(f"heedful: note: {text}\n")


def fold_compressor_for(lm: LoadedModel, choice: str | None, block: int | None, digest: str | None = None) -> str:
    """What --fold-compressor names, resolved: "mean", or a compressor folder. auto (None):
    the model folder's own fold_compressor/ when it pools blocks of this size, else mean. A
    recorded folder that is gone (a session from another install) is the model's own when
    that has the recorded digest."""
    folder = _model_folder(lm)
    own = folder / FOLDER if folder is not None else None
    if choice not in (None, "auto"):
        if choice == "mean":
            return choice
        path = Path(choice).expanduser()
        if not path.exists() and digest is not None and own is not None and compressor_digest(own) == digest:
            return str(own.resolve())
        return str(path.resolve())
    block = block or SessionConfig.fold_block
    if own is None or not (own / META).is_file():
        return "mean"
    try:
        theirs = json.loads((own / META).read_text()).get("block")
    except (OSError, ValueError) as e:
        _note(f"{own / META} is unreadable ({e}): summaries are means")
        return "mean"
    if theirs == block:
        return str(own.resolve())
    _note(f"{own} pools blocks of {theirs} tokens, not --fold-block {block}: summaries are means")
    return "mean"


def resolve_fold_settings(lm: LoadedModel, settings: dict, given: bool = True) -> dict:
    """Settings with --fold-compressor resolved (fold_compressor_for) when automatic fold is
    on; refused in one line when one is named without --fold-budget. `given`: the settings
    hold what a person asked for (a stored config's "mean" without fold is no request)."""
    out = dict(settings)
    choice = out.get("fold_compressor")
    if not out.get("fold_budget"):
        if given and choice not in (None, "auto", "mean"):
            raise HeedfulError(f"--fold-compressor {choice}: only with --fold-budget R > 0 (automatic fold)")
        out.pop("fold_compressor", None)
        return out
    out["fold_compressor"] = fold_compressor_for(lm, choice, out.get("fold_block"), out.get("fold_compressor_digest"))
    if out["fold_compressor"] == "mean":
        out.pop("fold_compressor_digest", None)
    return out


def fingerprints(lm: LoadedModel) -> dict:
    """What a stored session carries of its model and tokenizer (a resume checks them)."""
    from heedful.models.loading import model_fingerprint, tokenizer_fingerprint

    return {"model": model_fingerprint(lm.model), "tokenizer": tokenizer_fingerprint(lm.tokenizer)}


def stamp(recorder, lm: LoadedModel) -> None:
    """Writes the model's fingerprints into a store recorder's session state. Every rank of a
    tensor-parallel run computes them (gathering the sharded embedding is a collective),
    though only the recording rank keeps them."""
    prints = fingerprints(lm)
    state = getattr(recorder, "state", None)
    if state is not None and hasattr(state, "fingerprints"):
        state.fingerprints = prints


def session_for(lm: LoadedModel, *, recorder=None, **settings) -> Session:
    """A new session over a loaded model; settings given as None keep their defaults."""
    stamp(recorder, lm)
    settings = resolve_fold_settings(lm, settings)
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
    recorder.reset_resident(s.retained())
    return s


def resume(store, session_id: int | None = None, *, model: str | None = None, dtype="auto", device=None,
           trust_remote_code=False, lm=None, record: bool = True, atomic: bool = False, hold: bool = False,
           **settings):
    """Reopens a stored session: the engine is rebuilt from the stream, pins and drops in
    the store (Session.restore) and continues recording into the same session. `settings`
    (window, budget, ...) override the stored configuration; None values are ignored.

    The session is claimed first (one writer per session), and nothing is written until the
    restore has passed every check: a refused resume changes nothing in the store.
    `hold`: the resume stays held until the caller's own checks pass and it calls
    session.recorder.release() (or discard() on failure); `atomic`: the continuation is
    written only by its recorder's commit(store); `record=False`: nothing is recorded (a
    parallel run's ranks other than 0)."""
    rec = store.reopen(store.session(session_id).id, atomic=True) if record else NullRecorder()
    try:
        session = _resume(store, rec, session_id if not record else rec.session_id, model=model, dtype=dtype,
                          device=device, trust_remote_code=trust_remote_code, lm=lm, **settings)
        if record and not atomic and not hold:
            rec.release()
    except BaseException:
        rec.discard()
        rec.close()
        raise
    return session


def _resume(store, rec, session_id, *, model, dtype, device, trust_remote_code, lm, **settings):
    data = store.load(session_id)
    info = data.info
    cfg = {**info.config, **{k: v for k, v in settings.items() if v is not None}}
    if lm is None:
        lm = load_model(model or cfg.get("model"), dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    cfg["model"] = lm.name
    try:
        check_config(cfg, "settings")
    except ValueError as e:  # a stored config of the wrong shape (the flags are checked by click)
        raise HeedfulError(f"{store.path}: session {info.id}: {e} (a hand-edited database?)") from None
    check_model(lm, info)
    check_tokens(data.token_ids, lm, info)
    stamp(rec, lm)
    if settings.get("fold_budget") and not info.config.get("fold_budget") and "fold_compressor" not in settings:
        cfg["fold_compressor"] = "auto"  # automatic fold turned on now: the CLI's default
    if cfg.get("fold_budget") and cfg.get("fold_compressor", "mean") != "mean":  # absent: stored before, pooled by mean
        cfg = resolve_fold_settings(lm, cfg)
    n = len(data.token_ids)
    rec.event("resume", {"tokens": n, "config": cfg})
    st = info.state
    return restore_session(lm.model, lm.tokenizer, lm.gated, cfg, data.token_ids, data.token_texts,
                           data.token_sources, list(st.pins), list(st.dropped), rec,
                           folds=[(a, b, g) for (a, b), g in sorted(st.folds.items())])


def check_model(lm: LoadedModel, info) -> None:
    """A session that carries fingerprints continues only with the same model and tokenizer."""
    stored = info.state.fingerprints or {}
    if not stored:
        return  # recorded before sessions carried them: check_tokens is what can be checked
    now = fingerprints(lm)
    for what in ("model", "tokenizer"):
        if stored.get(what) not in (None, now[what]):
            raise HeedfulError(f"session {info.id} was recorded with another {what} ({info.config.get('model')}, "
                               f"fingerprint {stored[what]}), not {lm.name} ({now[what]}): give that --model")


def check_tokens(ids, lm: LoadedModel, info) -> None:
    """The stored token ids fit the model's vocabulary (a session recorded with another
    model, or a hand-edited one, is one line, not an IndexError in the embedding)."""
    if not ids:
        return
    emb = lm.model.get_input_embeddings()
    vocab = getattr(emb, "num_embeddings", None) or getattr(lm.model.config, "vocab_size", None)
    lo, hi = min(ids), max(ids)
    if lo < 0 or (vocab is not None and hi >= vocab):
        bad = lo if lo < 0 else hi
        raise HeedfulError(f"session {info.id}: token id {bad} is outside {lm.name}'s vocabulary of {vocab} "
                           f"(recorded with model {info.config.get('model') or info.model}? give that --model)")
