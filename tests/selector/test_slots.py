"""Rows never move (selector/slots.py, cache.py): the slot bookkeeping keeps its invariants
under any sequence of operations, a decode step writes one slot and re-rotates only the rows
before an eviction, and re-basing positions at the ceiling changes no logit."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heedful.models.loading import load_model
from heedful.selector.naive import ReferenceEngine
from heedful.selector.session import Session
from heedful.selector.slots import Slots


def _check(s: Slots) -> None:
    d = [p - r for r, p in enumerate(s.pos)]
    assert d == sorted(d), "pos - rank must never decrease along the ranks"
    assert len(set(s.slots)) == len(s.slots) and len(s.pos) == len(s.slots)
    assert sorted(s.slots + s._free) == list(range(s.capacity))
    assert all(x < s.hi for x in s.slots)


def _forward(s: Slots, n: int) -> None:
    a = s.align(n)
    s.set_positions(a.ranks, a.positions)
    assert len({p - r for r, p in enumerate(s.pos)}) <= 1, "after alignment every row sits at rank + shift"
    s.append(s.alloc(n), a.new_positions)
    assert max(a.new_positions) < s.ceiling


ops = st.lists(st.one_of(
    st.tuples(st.just("forward"), st.integers(1, 5)),
    st.tuples(st.just("keep"), st.lists(st.booleans(), min_size=40, max_size=40)),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("insert"), st.floats(0, 1)),
    st.tuples(st.just("put"), st.integers(1, 3)),
), max_size=60)


@settings(max_examples=200, deadline=None)
@given(ops=ops, capacity=st.integers(8, 40), max_positions=st.integers(40, 200))
def test_slot_bookkeeping_invariants(ops, capacity, max_positions):
    s = Slots(capacity, max_positions)
    for op, arg in ops:
        room = capacity - len(s)
        if op == "forward" and arg <= room:
            _forward(s, arg)
        elif op == "keep":
            rows = [r for r, k in zip(range(len(s)), arg) if k]
            runs = []
            for r in rows:
                if runs and runs[-1][1] == r:
                    runs[-1] = (runs[-1][0], r + 1)
                else:
                    runs.append((r, r + 1))
            first = s.keep(runs)
            assert first is None or first <= len(s)
        elif op == "truncate":
            s.truncate(int(arg * len(s)))
        elif op == "insert" and room:
            (slot,) = s.alloc(1)
            after, moved, _ = s.insert(int(arg * len(s)), slot)
            s.set_positions(after, moved)
        elif op == "put" and arg <= room:
            at = s.next_position()
            s.append(s.alloc(arg), list(range(at, at + arg)))
        _check(s)


def test_a_decode_step_writes_one_slot_and_rotates_only_the_pinned_rows(tiny_qwen35):
    lm = tiny_qwen35
    s = Session(lm.model, lm.tokenizer, window=12, budget=40, gated=True)
    s.prompt("The vault code is 4821. Remember it. Alice met Bob at the station at noon.")
    (pin,) = s.pin("4821")
    list(s.generate(30))  # the window is full: every step evicts its oldest token
    bank, slots = s.cache.bank, s.cache.slots
    before = bank.keys.clone(), bank.values.clone()
    pinned = [slots.slots[s.residency.rows.keys.index(t)] for t in range(*pin)]
    window = [slots.slots[r] for r, t in enumerate(s.residency.rows.keys) if t >= len(s) - 11]
    list(s.generate(1))
    new = slots.slots[-1]
    changed = [x for x in range(s.cache.capacity)
               if not torch.equal(bank.keys[:, :, :, x], before[0][:, :, :, x])
               or not torch.equal(bank.values[:, :, :, x], before[1][:, :, :, x])]
    assert new in changed
    assert set(changed) - {new} <= set(pinned), "only the new row and the re-rotated pins change"
    assert set(pinned) <= set(changed), "the pins were re-rotated (their distance to the query grew)"
    assert not set(changed) & (set(window) - {new}), "window rows keep their rotation"
    rd = s.cache.rotary.rotary_dim
    for x in pinned:  # only the rotary dims of a re-rotated row change
        assert torch.equal(bank.keys[:, :, :, x, rd:], before[0][:, :, :, x, rd:])


def test_rebasing_at_the_ceiling_gives_the_reference_logits(tiny_qwen35_short_dir, monkeypatch):
    """max_position_embeddings=128, budget 48: positions reach the ceiling every ~80 steps and
    every row is re-rotated to pos = rank; with pins, evictions, a drop and a recall, each
    step's logits stay those of the reference engine that frees nothing."""
    lm = load_model(str(tiny_qwen35_short_dir), dtype="float32", device="cpu")
    rebases = []
    align = Slots.align

    def spy(self, n):
        a = align(self, n)
        if len(self) and a.shift == 0 and self.pos[-1] != len(self) - 1:
            rebases.append(len(self))
        return a

    monkeypatch.setattr(Slots, "align", spy)
    s = Session(lm.model, lm.tokenizer, window=16, budget=48, prefill_chunk=5, gated=True)
    ref = ReferenceEngine(lm.model, lm.tokenizer, window=16, sinks=0, chunk=5)
    text = "The vault code is 4821. Remember it. Alice met Bob at the station at noon."
    s.prompt(text)
    ref.prompt(text)
    (a, b) = s.pin("4821")[0]
    ref.pin(a, b)
    for i, tok in enumerate(s.generate(260)):
        ref.step(tok.id)
        assert torch.allclose(s.next_logits, ref.logits, atol=1e-4, rtol=1e-4), i
        if i == 100:
            s.drop((len(s) - 6, len(s) - 4))
            ref.drop(len(s) - 6, len(s) - 4)
        if i == 150:
            s.recall((len(s) - 40, len(s) - 36))
            ref.recall(len(s) - 40, len(s) - 36)
            assert torch.allclose(s.next_logits, ref.logits, atol=1e-4, rtol=1e-4)
    assert len(rebases) >= 2
