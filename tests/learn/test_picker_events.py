"""The picker's own choices in the log (auto-pins marked "by": "picker", a prompt's
"picker_pins"), suggestions accepted and rejected, and how `heedful learn` reads them;
AutoPinner with pinning off (a UI's suggestions), claim and make_room."""

from __future__ import annotations

import json

from heedful.app.replay import run_script
from heedful.app.script import parse_script
from heedful.learn.autopin import AutoPinner
from heedful.learn.labels import token_labels
from heedful.selector.recorder import MemoryRecorder
from heedful.selector.session import Session
from heedful.spans import Spans
from heedful.store import Store
from tests.learn.test_autopin import TEXT, _fits, _picker


def test_labels_read_accepts_rejects_and_the_pickers_pins():
    events = [
        {"op": "config"},
        {"op": "prompt", "text": "x", "pins": [[0, 2], [3, 5]], "picker_pins": [[3, 5]]},  # 0-1 the person's
        {"op": "accept", "range": [6, 8], "score": 0.9},  # a suggestion accepted (and pinned)
        {"op": "pin", "range": [6, 8]},
        {"op": "reject", "range": [9, 11], "score": 0.7},  # a suggestion rejected
        {"op": "pin", "range": [12, 14], "by": "picker"},  # an auto-pin nobody judged: left out
        {"op": "pin", "range": [15, 17], "by": "picker"},
        {"op": "unpin", "range": [15, 17], "by": "picker"},  # the picker's unpin for room: still left out
        {"op": "pin", "range": [18, 20], "by": "picker"},
        {"op": "unpin", "range": [18, 20]},  # the person unpinned an auto-pin: rejected
        {"op": "pin", "range": [21, 23], "by": "picker"},
        {"op": "accept", "range": [21, 23]},  # an auto-pin made the person's
        {"op": "pin", "range": [24, 26]},
        {"op": "reject", "range": [24, 25]},  # rejected after a pin: negative
        {"op": "reject", "range": [27, 28]},
        {"op": "pin", "range": [27, 28]},  # pinned after a reject: positive again
        {"op": "pin", "range": [29, 30]},
        {"op": "pin", "range": [29, 31], "by": "picker"},  # the picker's pin over the person's keeps it theirs
    ]
    labels, mask, marks = token_labels(events, 32)
    assert [t for t in range(32) if labels[t]] == [0, 1, 6, 7, 21, 22, 25, 27, 29]
    assert [t for t in range(32) if not mask[t]] == [3, 4, 12, 13, 15, 16, 30]
    assert marks == 10  # the person's pin-like events, accepts and rejects; never the picker's
    # a drop after an auto-pin: thrown away (negative, counted)
    labels, mask, _ = token_labels([{"op": "pin", "range": [0, 2], "by": "picker"},
                                    {"op": "drop", "range": [0, 1]}], 3)
    assert labels == [0, 0, 0] and mask == [1, 0, 1]
    # a session of auto-pins only says nothing of the person
    assert token_labels([{"op": "pin", "range": [0, 2], "by": "picker"}], 3)[2] == 0


def test_auto_pins_are_marked_as_the_pickers_in_the_log(tiny_qwen35):
    lm = tiny_qwen35
    rec = MemoryRecorder()
    s = Session(lm.model, lm.tokenizer, gated=lm.gated, window=16, budget=40, prefill_chunk=8, recorder=rec)
    p = AutoPinner(_picker(0.0), lm.model)
    p.prompt(s, "The vault code is 4821.", pins=["4821"])
    p.prompt(s, " Remember it. Alice met Bob at the station at noon.")
    p.start()
    for tok in s.generate(20):
        p.token(s, tok)
    p.flush(s)
    p.close()
    first = next(e for e in rec.events if e["op"] == "prompt")
    person = Spans(s.resolve("4821"))
    picker = Spans(map(tuple, first["picker_pins"]))
    assert first["pins"] and first["picker_pins"] and not any(picker.overlaps(a, b) for a, b in person)
    pins = [e for e in rec.events if e["op"] == "pin"]
    unpins = [e for e in rec.events if e["op"] == "unpin"]
    assert pins and all(e.get("by") == "picker" for e in pins)
    assert unpins and all(e.get("by") == "picker" for e in unpins)  # room made by the picker
    assert any("at" in e for e in pins)  # made while the stream ran
    # learn leaves every auto-pin out, and the person's pin in
    labels, mask, marks = token_labels(rec.events, len(s))
    assert marks == 1 and [t for t in range(len(s)) if labels[t]] == [t for a, b in person for t in range(a, b)]
    assert sum(mask) < len(s)


def test_pinning_off_suggests_and_pins_nothing(tiny_qwen35):
    lm = tiny_qwen35
    rec = MemoryRecorder()
    s = Session(lm.model, lm.tokenizer, gated=lm.gated, window=16, budget=40, recorder=rec)
    p = AutoPinner(_picker(0.0), lm.model, pinning=False)
    p.prompt(s, TEXT[:40], pins=["vault"])
    got = p.take_suggestions()
    p.start()
    for tok in s.generate(12):
        p.token(s, tok)
    p.flush(s)
    p.close()
    got += p.take_suggestions()
    assert p.take_suggestions() == []  # taken once
    assert s.pins() == s.resolve("vault") and not p.owned()
    assert all(e.get("by") is None and "picker_pins" not in e for e in rec.events)
    words = [(x.start, x.end) for x in got]
    assert words == sorted(words) and all(x.score >= 0.0 for x in got)
    vault = Spans(s.pins())
    assert not any(vault.overlaps(a, b) for a, b in words)  # what the person pinned is not suggested
    assert max(b for _, b in words) == len(s)  # the last word too, decided at the end of the stream
    texts = s.token_texts
    assert all(texts[a][:1].isspace() or texts[a - 1][-1:].isspace() for a, _ in words if a)  # whole words


def test_claim_and_make_room_for_the_persons_pins(tiny_qwen35):
    lm = tiny_qwen35
    s = Session(lm.model, lm.tokenizer, gated=lm.gated, window=16, budget=40, prefill_chunk=8)
    p = AutoPinner(_picker(0.0), lm.model)
    p.prompt(s, TEXT)  # every word auto-pinned while there was room
    owned = p.owned()
    assert owned and _fits(s)
    p.claim(*owned[0])  # the person pinned the oldest auto-pin themselves: theirs now
    assert p.owned()[0] == owned[1]
    late = (len(s) - 3, len(s))
    assert p.make_room(s, [late])  # room from the oldest auto-pins, never the claimed one
    s.pin(late)
    assert all(t in Spans(s.pins()) for t in range(*owned[0]))
    assert _fits(s) and all(t in Spans(s.pins()) for t in range(*late))
    assert not p.make_room(s, [(0, len(s))])  # more than the budget: no auto-pin can make that room


def test_picker_events_parse_and_replay_as_they_were_logged(tiny_qwen35, tmp_path):
    text = "The vault code is 4821. Tom met Ann at the station."
    n = len(tiny_qwen35.tokenizer(text)["input_ids"])
    lines = [
        {"op": "config", "window": 16, "budget": 64},
        {"op": "prompt", "text": text, "pins": [[4, 6], [7, 9]], "picker_pins": [[7, 9]]},
        {"op": "accept", "range": [1, 3], "score": 0.8},
        {"op": "pin", "range": [1, 3]},
        {"op": "generate", "n": 4, "stop_at_eos": False},
        {"op": "pin", "range": [n - 2, n], "by": "picker", "at": n + 1},
        {"op": "reject", "range": [n, n + 1], "at": n + 2},
        {"op": "unpin", "range": [n - 2, n], "by": "picker", "at": n + 2},
    ]
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = run_script(parse_script(path), path, lm=tiny_qwen35)
    with Store.open(tmp_path / "r.db") as store:
        sid = result.recorder.commit(store)
        logged = store.events(sid)
    assert [e for e in logged if e["op"] != "config"] == lines[1:]
    for bad, says in ((dict(lines[5], by="person"), "'by' must be one of"),
                      ({"op": "accept", "text": "x"}, "field 'range' is missing"),
                      ({"op": "reject", "range": [1, 2], "score": "high"}, "'score' must be a finite number"),
                      (dict(lines[1], picker_pins=[[3, 1]]), "'picker_pins' must be a list")):
        path.write_text(json.dumps(lines[0]) + "\n" + json.dumps(bad) + "\n")
        try:
            parse_script(path)
        except Exception as e:  # noqa: BLE001
            assert says in str(e), e
        else:
            raise AssertionError(f"accepted {bad}")
