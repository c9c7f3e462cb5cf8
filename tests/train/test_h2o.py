"""The H2O baseline of the retention benchmark (heedful/train/h2o.py): a policy of its own,
given to the Session, that learns from the attention the engine collects for it."""

from __future__ import annotations

from heedful.selector.session import Session
from heedful.train.h2o import HeavyHitterPolicy

PROMPT = "The vault code is 4821. Remember it. Alice met Bob at the station at noon."


def test_heavy_hitter_policy_keeps_the_most_attended_tokens(tiny_qwen35):
    lm = tiny_qwen35
    s = Session(lm.model, lm.tokenizer, gated=True, window=8, budget=16, prefill_chunk=1,
                policy=HeavyHitterPolicy(8, 16))
    s.prompt(PROMPT)
    list(s.generate(30))
    retained = s.retained()
    assert len(retained) <= 16
    window = set(range(len(s) - 8, len(s)))
    heavy = [t for t in retained if t not in window]
    assert heavy, "the rest of the budget holds heavy hitters"
    scores = s.policy.scores
    # heavy hitters are chosen by accumulated attention: each kept one has a score
    assert all(t in scores for t in heavy)
