"""Auto-pin within the budget, the hidden states it reads while generating, suggestions,
and --auto-pin on generate and replay (recorded as ordinary pins: the log replays without
the picker)."""

from __future__ import annotations

import json

import torch

from heedful.learn.autopin import AutoPinner
from heedful.learn.features import Tap
from heedful.learn.picker import Head, Picker, suggest
from heedful.selector.session import Session
from heedful.spans import Spans
from tests.learn.conftest import summary_of

TEXT = ("The vault code is 4821. Remember it. Alice met Bob at the station at noon. The quick brown fox jumps "
        "over the lazy dog. A filler sentence follows another filler sentence.")


def _picker(threshold: float, lookahead: int = 2) -> Picker:
    torch.manual_seed(0)
    head = Head(128, "mlp", hidden=16, lookahead=lookahead, rank=32)
    meta = {"format": 1, "layers": [0, 1], "window": 64, "stride": 32, "threshold": threshold,
            "head": {"kind": "mlp", "d_in": 128, "hidden": 16, "lookahead": lookahead, "rank": 32}}
    return Picker(head, meta)


def _fits(s: Session) -> bool:
    return Spans(s.pins()).union_count(s.config.sinks) + s.config.window <= s.config.budget


def test_auto_pins_never_overflow_and_the_oldest_leave_first(tiny_qwen35):
    lm = tiny_qwen35
    s = Session(lm.model, lm.tokenizer, gated=lm.gated, window=16, budget=40, prefill_chunk=8)
    p = AutoPinner(_picker(0.0), lm.model)  # threshold 0: every word is worth a pin
    p.prompt(s, "The vault code is 4821.", pins=["4821"])  # the person's own pin, given with the prompt
    person = s.resolve("4821")
    assert _fits(s)
    p.prompt(s, " Remember it. Alice met Bob at the station at noon.")
    assert _fits(s)
    p.start()
    for tok in s.generate(30):
        p.token(s, tok)
        assert _fits(s) and s.stats().resident <= 40
    p.flush(s)
    p.close()
    assert _fits(s)
    pins = Spans(s.pins())
    assert all(t in pins for a, b in person for t in range(a, b))  # the person's pin stays
    assert p.unpinned and p.auto_spans
    assert p.unpinned[0][0] < p.auto_spans[0][0]  # the oldest went first
    assert max(b for _, b in p.auto_spans) > len(s) - 8  # the newest are kept
    assert not p.tap


def test_nothing_is_pinned_above_every_score(tiny_qwen35):
    lm = tiny_qwen35
    s = Session(lm.model, lm.tokenizer, gated=lm.gated, window=16, budget=64)
    p = AutoPinner(_picker(1.01), lm.model)
    p.prompt(s, TEXT)
    for tok in s.generate(10):
        p.token(s, tok)
    p.flush(s)
    assert s.pins() == [] and not p.auto_spans and p.scored == len(s)


def test_generation_reads_the_states_of_its_own_steps(tiny_qwen35):
    """With nothing evicted a session's step computes what a plain forward does, so the
    states read from the step's hooks equal the plain forward's."""
    lm = tiny_qwen35
    pk = _picker(0.5)
    s = Session(lm.model, lm.tokenizer, gated=lm.gated, window=200, budget=256)
    s.prompt(TEXT[:60])
    got = []
    with Tap(lm.model, pk.layers) as tap:
        for _ in s.generate(6):
            got.append(tap.features(slice(-1, None)))
    plain = pk.states(lm.model, list(s.token_ids))[-6:]
    assert torch.allclose(torch.cat(got), plain, atol=1e-4)


def test_suggestions_leave_out_what_is_pinned(tiny_qwen35):
    lm = tiny_qwen35
    s = Session(lm.model, lm.tokenizer, gated=lm.gated, window=64, budget=256)
    s.prompt(TEXT, pin=["Alice"])
    sug = suggest(_picker(0.0), s)
    pinned = {t for a, b in s.pins() for t in range(a, b)}
    assert sug and all(t not in pinned for x in sug for t in range(x.start, x.end))
    covered = {t for x in sug for t in range(x.start, x.end)}
    assert covered | pinned == {t for t in range(len(s)) if s.token_texts[t].strip()} | pinned
    assert suggest(_picker(1.01), s) == []


def test_generate_and_replay_auto_pin_and_the_log_replays_without_the_picker(cli, picker_dir, tiny_qwen35_dir,
                                                                            tmp_path):
    meta = json.loads((picker_dir / "picker.json").read_text())
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "picker.safetensors").write_bytes((picker_dir / "picker.safetensors").read_bytes())
    (loose / "picker.json").write_text(json.dumps({**meta, "threshold": 0.0}))  # pins every word
    db = tmp_path / "g.db"
    code, out, err = cli("generate", "The code for the red door is 4821. Tom went home.", "-n", "12", "--model",
                         tiny_qwen35_dir, "--picker", loose, "--auto-pin", "--json", "--db", db, "--window", "16",
                         "--budget", "48", "--ignore-eos")
    assert code == 0, err
    summ = summary_of(out)
    assert summ["auto_pins"] and 0 <= summ["scoring_ms_per_token"]
    assert Spans(summ["pins"]).union_count(0) + 16 <= 48
    code, out, err = cli("generate", "The code is 4821.", "-n", "3", "--model", tiny_qwen35_dir, "--picker",
                         picker_dir, "--json")
    assert code == 0 and "suggestions" in summary_of(out) and "auto_pins" not in summary_of(out)
    events = tmp_path / "events.jsonl"
    assert cli("export", "--db", db, "--what", "events", "-o", events)[0] == 0
    ops = [json.loads(ln) for ln in events.read_text().splitlines()]
    assert ops[1]["op"] == "prompt" and ops[1].get("pins") and any(o["op"] == "pin" and "at" in o for o in ops)
    code, out, err = cli("replay", events, "--db", tmp_path / "r.db", "--model", tiny_qwen35_dir, "--json")
    assert code == 0, err
    lines = [json.loads(ln) for ln in out.splitlines()]
    gen = [x for x in lines if x.get("op") == "generate"][0]
    from heedful.store import Store

    with Store.open(db, readonly=True) as a, Store.open(tmp_path / "r.db", readonly=True) as b:
        assert a.load(1).token_ids == b.load(1).token_ids
        assert a.session(1).state.pins == b.session(1).state.pins
    assert len(gen["ids"]) == 12
    # replay with the picker auto-pins too
    code, out, err = cli("replay", events, "--db", tmp_path / "r2.db", "--model", tiny_qwen35_dir, "--picker", loose,
                         "--auto-pin", "--json")
    assert code == 0, err
    assert "auto_pins" in summary_of(out)
