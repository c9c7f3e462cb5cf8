"""Folds through the store: the log, the store's state, exports, replay byte for byte, resume."""

from __future__ import annotations

import io
import json

from heedful.app.open import resume
from heedful.selector.session import Session
from heedful.store import Store
from heedful.store.export import export
from tests.app.test_replay import _assert_store_matches, _replay
from tests.rows import summaries

PROMPT = "The vault code is 4821. Remember it. Alice met Bob at the station at noon."
MORE = " The weather was calm and the lake was still."


def _record(lm, store):
    rec = store.new_session(title="folds")
    s = Session(lm.model, lm.tokenizer, recorder=rec, gated=lm.gated, window=60, budget=120)
    s.prompt(PROMPT)
    s.fold("Alice met Bob at the station", gist=" a meeting")
    s.prompt(MORE)
    gen = s.generate(12)
    for k, _ in enumerate(gen):
        if k == 3:
            s.fold("The weather was calm", gist=" calm")  # made while streaming: logged with "at"
    s.unfold("weather")
    list(s.generate(70))  # the window moves past the first fold: its gist stays
    rec.flush()
    return s, rec


def test_folds_are_logged_stored_exported_and_replayed(tiny_qwen35, tmp_path):
    store = Store.open(tmp_path / "a.db")
    s, rec = _record(tiny_qwen35, store)
    sid = rec.session_id
    (a, b, gist), = s.folds()
    info = store.session(sid)
    assert info.state.folds == {(a, b): " a meeting"}
    _assert_store_matches(store, sid, s)
    folds_logged = [e for e in store.events(sid) if e["op"] in ("fold", "unfold")]
    assert [e["op"] for e in folds_logged] == ["fold", "fold", "unfold"] and "at" in folds_logged[1]
    # all: the original with the fold marked; retained: the gist in its place
    out = io.StringIO()
    export(store, sid, "all", "md", out)
    assert "folded, held as the gist ' a meeting'" in out.getvalue() and "Alice met Bob" in out.getvalue()
    out = io.StringIO()
    export(store, sid, "retained", "txt", out)
    assert " a meeting" in out.getvalue() and "Alice met Bob at the station" not in out.getvalue()
    out = io.StringIO()
    export(store, sid, "retained", "jsonl", out)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert {"fold": [a, b], "gist": " a meeting", "state": "gist"} in lines
    assert not any(a <= x.get("index", -1) < b for x in lines)
    # replay: the same tokens, the same state
    result, out_store, new_sid = _replay(tmp_path, store, sid, tiny_qwen35)
    assert result.session.token_ids == s.token_ids and result.session.folds() == s.folds()
    _assert_store_matches(out_store, new_sid, s)
    assert out_store.events(new_sid)[1:] == store.events(sid)[1:]
    # resume: the fold is rebuilt, and the session goes on
    rec.close()
    r = resume(store, sid, lm=tiny_qwen35)
    assert r.folds() == s.folds() and r.retained() == s.retained()
    list(r.generate(5))
    r.recorder.close()
    _assert_store_matches(store, sid, r)


def test_automatic_fold_with_a_learned_compressor_replays_and_resumes(tiny_qwen35, tmp_path):
    """The config names the compressor: a replay pools with it (the same tokens, sampled), a
    resume rebuilds its summaries with it."""
    from heedful.selector.compressor import LearnedPool, model_sizes
    from tests.tiny_models import moved_compressor

    comp = moved_compressor(model_sizes(tiny_qwen35.model), block=4, seed=2, scale=0.3)
    comp.save(tmp_path / "c")
    store = Store.open(tmp_path / "a.db")
    rec = store.new_session(title="autofold")
    s = Session(tiny_qwen35.model, tiny_qwen35.tokenizer, recorder=rec, gated=True, window=16, budget=28,
                fold_budget=8, fold_block=4, fold_compressor=str(tmp_path / "c"), temperature=0.9, seed=3)
    s.prompt(PROMPT + MORE)
    list(s.generate(60))
    rec.flush()
    sid = rec.session_id
    assert store.session(sid).config["fold_compressor"] == str(tmp_path / "c")
    result, _, _ = _replay(tmp_path, store, sid, tiny_qwen35)
    assert result.session.token_ids == s.token_ids
    assert result.session.residency.rows.keys == s.residency.rows.keys  # the summaries too
    r = resume(store, sid, lm=tiny_qwen35)
    assert isinstance(r.residency.autofold.compressor, LearnedPool)
    assert summaries(r) == 8
