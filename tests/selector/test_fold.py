"""Folding a span into a gist: the gist reads the span in place, then stands for it."""

from __future__ import annotations

import pytest
import torch

from heedful.errors import BudgetError, HeedfulError, TargetError
from heedful.models.loading import default_model_dir, load_model
from heedful.selector.recorder import MemoryRecorder
from heedful.selector.session import Session
from tests.rows import gist_keys, only_tokens

PROMPT = "The vault code is 4821. Remember it. Alice met Bob at the station at noon."
FILLER = " The weather was calm and the lake was still, and nobody said a word for a while."


def _session(lm, **kw):
    kw.setdefault("window", 160)
    kw.setdefault("budget", 256)
    return Session(lm.model, lm.tokenizer, gated=lm.gated, **kw)


def _state(s):
    return (s.pins(), s.retained(), s.folds(), len(s), list(s.residency.rows.keys), s.next_logits.clone())


def test_a_fold_at_the_end_equals_the_gist_appended_and_the_span_dropped(tiny_qwen35):
    """Folding the newest span: the gist's rows read the span, then the span goes; the same
    as appending the gist and dropping the span."""
    a = _session(tiny_qwen35)
    a.prompt(PROMPT)
    span = a.resolve("Alice met Bob at the station at noon.")[0]
    a.fold(span, gist=" Alice, Bob: noon")
    b = _session(tiny_qwen35)
    b.prompt(PROMPT)
    b.prompt(" Alice, Bob: noon")
    b.drop(span)
    assert torch.allclose(a.next_logits, b.next_logits, atol=1e-4), (a.next_logits - b.next_logits).abs().max()
    for ta, tb in zip(a.generate(5), b.generate(5)):
        assert ta.id == tb.id
        assert torch.allclose(a.next_logits, b.next_logits, atol=1e-4)


def test_fold_in_the_middle_then_unfold(tiny_qwen35):
    rec = MemoryRecorder()
    s = _session(tiny_qwen35, recorder=rec)
    s.prompt(PROMPT + FILLER)
    n = len(s)
    (span,) = s.resolve("Alice met Bob at the station at noon.")
    s.pin(span)
    before = s.stats().resident
    s.fold(span, gist=" Alice and Bob met")
    a, b = span
    gist_rows = len(tiny_qwen35.tokenizer(" Alice and Bob met", add_special_tokens=False)["input_ids"])
    assert s.folds() == [(a, b, " Alice and Bob met")]
    assert not set(range(a, b)) & set(s.retained())  # the span's rows left
    assert s.stats().resident == before - (b - a) + gist_rows  # the gist's rows stay
    assert s.pins() == [] and len(s) == n  # the stream keeps the original
    order = list(s.residency.rows.keys)
    assert order == sorted(order) and sum(1 for t in order if a <= t < b) == gist_rows
    assert rec.events[-1] == {"op": "fold", "range": [a, b], "gist": " Alice and Bob met"}
    list(s.generate(4))
    assert s.folds() == [(a, b, " Alice and Bob met")]
    assert s.unfold("Alice") == [(a, b)]
    assert s.folds() == [] and (a, b) in s.pins()
    assert set(range(a, b)) <= set(s.retained())
    assert only_tokens(s)
    assert rec.events[-1] == {"op": "unfold", "range": [a, b]}


def test_folds_survive_the_window_and_budget(tiny_qwen35):
    s = _session(tiny_qwen35, window=20, budget=40)
    s.prompt(PROMPT)
    (span,) = s.resolve("at noon.")
    a, b = span
    s.fold(span, gist=" noon")
    for _ in s.generate(40):
        assert s.cache.resident() <= 40
    assert s.folds() == [(a, b, " noon")]
    keys = [t for t in s.residency.rows.keys if a <= t < b]
    assert keys and keys == gist_keys(s)  # the gist is kept like a pin


def test_rewind_before_a_fold_lets_it_go(tiny_qwen35):
    s = _session(tiny_qwen35)
    s.prompt(PROMPT + FILLER)
    (span,) = s.resolve("Alice met Bob")
    s.fold(span, gist=" meeting")
    s.rewind(span[1] + 3)  # after the fold: it stays
    assert len(s.folds()) == 1
    s.rewind(span[0] + 1)  # inside it: it goes
    assert s.folds() == [] and only_tokens(s)
    assert list(s.generate(2))


@pytest.mark.parametrize("op,args,err", [
    ("fold", ((3, 3),), TargetError),  # empty
    ("fold", ((5, 6),), TargetError),  # one token
    ("fold", ("Alice", " a gist that is much longer than the span it folds, surely"), TargetError),
    ("fold", ("station at noon", ""), TargetError),  # empty gist
    ("fold", ("vault code", " x"), TargetError),  # overlaps the fold made below
    ("fold", ("Bob at the", " x"), TargetError),  # overlaps a drop
    ("unfold", ("Remember",), TargetError),  # nothing folded there
    ("pin", ("4821",), TargetError),  # inside a fold
    ("drop", ("4821",), TargetError),
])
def test_bad_folds_are_refused_and_change_nothing(tiny_qwen35, op, args, err):
    s = _session(tiny_qwen35)
    s.prompt(PROMPT + FILLER)
    s.fold("The vault code is 4821.", gist=" code 4821")
    s.drop("Bob")
    state = _state(s)
    with pytest.raises(err):
        getattr(s, op)(*args)
    after = _state(s)
    assert after[:5] == state[:5] and torch.equal(after[5], state[5])


def test_a_gist_that_overflows_the_budget_is_refused(tiny_qwen35):
    gist = " noon"
    m = len(tiny_qwen35.tokenizer(gist, add_special_tokens=False)["input_ids"])
    s = _session(tiny_qwen35, window=20, budget=20 + m - 1)  # room for all but one gist row
    s.prompt(PROMPT)
    with pytest.raises(BudgetError, match="gists"):
        s.fold("at noon.", gist=gist)
    assert s.folds() == []


def test_a_span_that_left_must_be_recalled_before_folding(tiny_qwen35):
    s = _session(tiny_qwen35, window=8, budget=24)
    s.prompt(PROMPT + FILLER)
    with pytest.raises(TargetError, match="resident"):
        s.fold("The vault code", gist=" code")


def test_restore_rebuilds_folds(tiny_qwen35):
    s = _session(tiny_qwen35)
    s.prompt(PROMPT + FILLER)
    s.fold("Alice met Bob at the station", gist=" a meeting")
    st = s.state()
    r = Session.restore(tiny_qwen35.model, tiny_qwen35.tokenizer, config=st["config"], token_ids=s.token_ids,
                        token_texts=s.token_texts, token_sources=s.token_sources, pins=st["pins"],
                        dropped=st["dropped"], folds=[tuple(f) for f in st["folds"]], gated=True)
    assert r.folds() == s.folds() and r.retained() == s.retained()
    assert list(r.residency.rows.keys) == list(s.residency.rows.keys)  # the gist rows at the same place
    assert r.stats().resident == s.stats().resident and len(list(r.generate(3))) == 3


def test_hybrid_models_cannot_fold(tmp_path):
    from tests.tiny_models import build_tiny_model

    lm = load_model(str(build_tiny_model(tmp_path, "qwen3_5_hybrid")), dtype="float32", device="cpu")
    s = _session(lm)
    s.prompt(PROMPT)
    with pytest.raises(HeedfulError, match="full attention"):
        s.fold("Alice met Bob", gist=" x")


@pytest.mark.skipif(default_model_dir() is None, reason="no embedded default model in this build")
def test_the_model_writes_a_gist_when_none_is_given():
    lm = load_model(None, dtype="float32", device="cpu")
    s = _session(lm)
    s.prompt("The library provides a class for reading files. It opens each file, reads its lines and "
             "returns them as a list of strings, one per line.")
    (a, b), = s.fold((1, len(s) - 1))
    ((fa, fb, gist),) = s.folds()
    n = len(lm.tokenizer(gist, add_special_tokens=False)["input_ids"])
    assert (fa, fb) == (a, b) and gist.strip() and 0 < n < b - a


def test_a_fold_the_budget_cannot_read_is_refused_before_anything_changes(tiny_qwen35):
    """The gist is encoded while the span is still read: pins (4) + span (12) + window (12) +
    gist rows must fit. At budget 30 they do not: refused in one line, nothing changed (it
    raised 'KV budget exceeded' from the cache, half done); at 32 the fold goes through."""
    from heedful.selector.session import SessionConfig

    def session(budget):
        s = Session(tiny_qwen35.model, tiny_qwen35.tokenizer, config=SessionConfig(
            model="t", temperature=0, window=12, budget=budget), recorder=MemoryRecorder(), gated=True)
        s.prompt("Alice keeps the key 7310 under the mat. Bob went to buy bread and milk.", pin=["7310"])
        list(s.generate(20))
        s.recall("bread and milk")
        s.unpin("bread and milk")
        return s

    s = session(30)
    before = (s.retained(), len(s.recorder.events))
    with pytest.raises(BudgetError, match="cannot hold both"):
        s.fold("bread and milk", gist="food")
    assert (s.retained(), len(s.recorder.events)) == before
    s = session(32)
    assert s.fold("bread and milk", gist="food") and s.folds()
