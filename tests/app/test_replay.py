"""Round trips through the store with a real (tiny) model: record, export the log, replay
it into a fresh database, and compare token ids and the final token state."""

from __future__ import annotations

import io

import pytest

from heedful.errors import HeedfulError
from heedful.app.open import resume
from heedful.app.replay import run_script
from heedful.app.script import parse_script
from heedful.selector.session import Session
from heedful.store import Store
from heedful.store.export import write_events

PROMPT = "The vault code is 4821. Remember it. Alice met Bob at the station at noon."


def _retained_from_store(info) -> list[int]:
    gone = info.state.evicted
    return [t for t in range(info.tokens) if t not in gone]


def _assert_store_matches(store, sid, s):
    """The store's view of the session equals the engine's."""
    info = store.session(sid)
    data = store.load(sid)
    assert data.token_ids == s.token_ids
    assert data.token_texts == s.token_texts
    assert data.token_sources == s.token_sources
    assert list(info.state.pins) == s.pins()
    assert list(info.state.dropped) == s.dropped()
    assert _retained_from_store(info) == s.retained()


def _record(lm, store, **settings):
    rec = store.new_session(title="round trip")
    s = Session(lm.model, lm.tokenizer, recorder=rec, gated=lm.gated, window=8, budget=40, prefill_chunk=8,
                **settings)
    s.prompt(PROMPT)
    s.pin("4821")
    gen = s.generate(30)
    for k, _ in enumerate(gen):
        if k == 5:
            s.pin((len(s) - 3, len(s) - 1))  # pinned while streaming: logged with "at"
        if k == 12:
            s.drop((len(s) - 4, len(s) - 2))
        if k == 20:
            s.unpin("4821")
        if k == 25:
            gen.close()  # cut short: a stop event
    s.recall("Alice")  # evicted by now: re-encoded in place, pinned
    s.recall("station", append=True)  # evicted too: re-encoded as new pinned tokens at the end
    s.drop("Bob")
    s.pin("Bob")  # dropped: back in place
    s.prompt(" The vault code is", pin=["vault"])  # pinned before it is processed
    list(s.generate(10))
    s.rewind(len(s) - 4)
    list(s.generate(6))
    rec.flush()
    return s, rec


def _replay(tmp_path, store, sid, lm, name="events.jsonl"):
    path = tmp_path / name
    with open(path, "w", encoding="utf-8") as f:
        write_events(store, sid, f)
    result = run_script(parse_script(path), path, lm=lm)
    out = Store.open(tmp_path / f"{name}.db")
    new_sid = result.recorder.commit(out)
    return result, out, new_sid


@pytest.mark.parametrize("settings", [{}, {"temperature": 0.9, "seed": 7}], ids=["greedy", "sampled"])
def test_round_trip_reproduces_token_ids_and_state(tiny_qwen35, tmp_path, settings):
    store = Store.open(tmp_path / "a.db")
    s, rec = _record(tiny_qwen35, store, **settings)
    sid = rec.session_id
    events = store.events(sid)
    ops = [e["op"] for e in events]
    assert {"pin", "unpin", "drop", "recall", "rewind", "stop"} <= set(ops)
    assert any("at" in e for e in events) and store.evictions(sid) and store.recalls(sid)
    _assert_store_matches(store, sid, s)

    result, out, new_sid = _replay(tmp_path, store, sid, tiny_qwen35)
    r = result.session
    assert r.token_ids == s.token_ids
    assert r.retained() == s.retained() and r.pins() == s.pins() and r.dropped() == s.dropped()
    _assert_store_matches(out, new_sid, s)
    # the replay logs the same operations (the model is named by its path there)
    replayed = out.events(new_sid)
    assert replayed[1:] == events[1:]
    assert {**replayed[0], "model": None} == {**events[0], "model": None}


def test_resume_continues_and_replays(tiny_qwen35, tmp_path):
    store = Store.open(tmp_path / "a.db")
    s, rec = _record(tiny_qwen35, store)
    sid = rec.session_id
    rec.close()
    before = list(s.token_ids)

    r = resume(store, sid, lm=tiny_qwen35)
    assert r.token_ids == before and r.pins() == s.pins() and r.dropped() == s.dropped()
    r.prompt(" Again:")
    list(r.generate(12))
    r.recorder.close()
    _assert_store_matches(store, sid, r)
    assert [e["op"] for e in store.events(sid)[-3:]] == ["resume", "prompt", "generate"]

    result, out, new_sid = _replay(tmp_path, store, sid, tiny_qwen35)
    assert result.session.token_ids == r.token_ids
    _assert_store_matches(out, new_sid, r)


def test_failing_replay_writes_nothing(tiny_qwen35, tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"op": "config", "window": 8, "budget": 32}\n{"op": "prompt", "text": "The vault code"}\n'
                    '{"op": "generate", "n": 3}\n{"op": "pin", "text": "no such words"}\n')
    with pytest.raises(HeedfulError, match=r"s\.jsonl:4: .*not found"):
        run_script(parse_script(path), path, lm=tiny_qwen35)
    path.write_text('{"op": "prompt", "text": "The vault code"}\n{"op": "unpin", "range": [0, 999]}\n')
    with pytest.raises(HeedfulError, match=r"s\.jsonl:2: .*past the end"):
        run_script(parse_script(path), path, lm=tiny_qwen35)


def test_a_scripts_generate_stops_at_end_of_text_unless_told_not_to(tiny_qwen35, tmp_path, monkeypatch):
    """A hand-written generate stops at end-of-text like `heedful generate`; the log says which
    it did, so recordings of either kind replay as they ran."""
    from heedful.selector.session import Session

    s = Session(tiny_qwen35.model, tiny_qwen35.tokenizer, window=8, budget=32)
    s.prompt("The vault code is 4821.")
    ids = [t.id for t in s.generate(6)]
    monkeypatch.setattr(tiny_qwen35.tokenizer, "eos_token_id", ids[3])  # the 4th token is "end-of-text"
    head = '{"op": "config", "window": 8, "budget": 32}\n{"op": "prompt", "text": "The vault code is 4821."}\n'
    for line, expect in (('{"op": "generate", "n": 6}', 4),
                         ('{"op": "generate", "n": 6, "stop_at_eos": false}', 6)):
        script = tmp_path / "s.jsonl"
        script.write_text(head + line + "\n")
        r = run_script(parse_script(script), script, lm=tiny_qwen35)
        gen = [x for x in r.results if x["op"] == "generate"][0]
        assert gen["ids"] == ids[:expect]
        with Store.open(tmp_path / f"{expect}.db") as store:
            r.recorder.commit(store)
            events = store.events(r.recorder.session_id)
        assert [e for e in events if e["op"] == "generate"][0]["stop_at_eos"] == (expect == 4)
        assert [e["at"] for e in events if e["op"] == "stop"] == ([len(r.session)] if expect == 4 else [])
