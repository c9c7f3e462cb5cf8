"""The retention policy's row spans (found by bisection) against the per-token definition;
the credit pool of auto selection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heedful.selector.policy import SCORES, CreditPolicy, RetentionPolicy, policy_for, rows_of
from heedful.spans import Spans


def _oracle(policy, resident, stream_len, n_new, pins):
    """docs/DESIGN.md's rule, token by token: sinks, pins, the window; with auto selection the
    most recent others, as many as the budget holds."""
    keep = [t for t in resident if policy.always(t, stream_len, n_new, pins)]
    if policy.auto_topk:
        room = policy.budget - n_new - len(keep)
        if room > 0:
            kept = set(keep)
            keep = sorted(keep + [t for t in resident if t not in kept][-room:])
    return keep


def _tokens(resident, rows: Spans):
    return [resident[r] for a, b in rows for r in range(a, b)]


@settings(max_examples=300, deadline=None)
@given(data=st.data(), stream_len=st.integers(0, 80), window=st.integers(1, 20), sinks=st.integers(0, 4),
       n_new=st.integers(1, 8), auto=st.booleans(), budget_extra=st.integers(0, 30))
def test_keep_rows_equal_the_per_token_rule(data, stream_len, window, sinks, n_new, auto, budget_extra):
    resident = sorted(data.draw(st.sets(st.integers(0, max(stream_len - 1, 0)), max_size=60)) if stream_len else [])
    pins = Spans()
    for a, length in data.draw(st.lists(st.tuples(st.integers(0, 90), st.integers(1, 6)), max_size=6)):
        pins.add(a, a + length)
    policy = RetentionPolicy(window, window + sinks + budget_extra, sinks, auto_topk=2 if auto else 0, block_size=4)
    rows = policy.keep_rows(resident, stream_len, n_new, pins)
    assert _tokens(resident, rows) == _oracle(policy, resident, stream_len, n_new, pins)
    always = policy.always_rows(resident, stream_len, n_new, pins)
    assert [r for a, b in always for r in range(a, b)] == \
        [r for r, t in enumerate(resident) if policy.always(t, stream_len, n_new, pins)]


def test_rows_of():
    resident = [2, 3, 5, 8, 9, 10]
    assert list(rows_of(resident, [3, 5, 9, 10])) == [(1, 3), (4, 6)]
    assert list(rows_of(resident, [])) == []


# ---------------------------------------------------------------------- the credit pool
def _credit_policy(window=4, budget=20, sinks=0, probation=0, half_life=10 ** 18, rate=True):
    return CreditPolicy(window, budget, sinks, auto_topk=2, block_size=4, probation=probation, half_life=half_life,
                        rate=rate)


def _kept(policy, resident, stream_len=None, n_new=1, pins=None):
    stream_len = resident[-1] + 1 if stream_len is None else stream_len
    rows = policy.keep_rows(resident, stream_len, n_new, Spans() if pins is None else pins)
    return [resident[r] for a, b in rows for r in range(a, b)]


@settings(max_examples=300, deadline=None)
@given(data=st.data(), stream_len=st.integers(1, 80), window=st.integers(1, 12), sinks=st.integers(0, 3),
       n_new=st.integers(1, 6), budget_extra=st.integers(0, 30), reserve=st.integers(0, 4),
       probation=st.sampled_from([0, 3, None]), half_life=st.sampled_from([10 ** 18, 7, None]), rate=st.booleans())
def test_credit_pool_keeps_the_fixed_rows_and_never_exceeds_the_budget(data, stream_len, window, sinks, n_new,
                                                                       budget_extra, reserve, probation, half_life,
                                                                       rate):
    """Whatever the credits: sinks, pins and the window stay; the rows kept plus the chunk and
    the reserve fit the budget (when the fixed rows do); the pool is as full as the budget
    allows; the same inputs give the same rows."""
    resident = sorted(data.draw(st.sets(st.integers(0, stream_len - 1), max_size=60)))
    pins = Spans()
    for a, length in data.draw(st.lists(st.tuples(st.integers(0, 90), st.integers(1, 6)), max_size=4)):
        pins.add(a, a + length)
    budget = window + sinks + budget_extra
    steps = [(sorted(set(data.draw(st.lists(st.integers(0, max(len(resident) - 1, 0)), max_size=8)))),
              data.draw(st.integers(0, len(resident)))) for _ in range(data.draw(st.integers(0, 4)))]  # picks, pool
    runs = []
    for _ in range(2):
        policy = _credit_policy(window, budget, sinks, probation, half_life, rate)
        for picked, pool_end in steps:
            if resident:
                policy.observe_selection(resident, 1, (0, pool_end), picked, [1.0] * len(picked))
        runs.append((policy, policy.keep_rows(resident, stream_len, n_new, pins, reserve)))
    (policy, rows), (_, again) = runs
    assert list(rows) == list(again)
    kept = [resident[r] for a, b in rows for r in range(a, b)]
    always = [t for t in resident if policy.always(t, stream_len, n_new, pins)]
    assert set(always) <= set(kept)
    room = budget - n_new - reserve - len(always)
    others = len(resident) - len(always)
    assert len(kept) - len(always) == max(0, min(room, others))


def test_credit_pool_keeps_a_repeatedly_picked_block_over_a_more_recent_one():
    """Window 4, one new token: tokens 17..19 stay, the pool is 0..16. Rows 0..3 were picked
    at every step, rows 4..11 never: when four rows must go, the fifo pool gives up 0..3, the
    credit pool the oldest unpicked ones, 4..7."""
    resident = list(range(20))
    fifo = RetentionPolicy(4, 17, auto_topk=2, block_size=4)
    assert _kept(fifo, resident) == list(range(4, 20))
    for rate in (True, False):
        policy = _credit_policy(window=4, budget=17, rate=rate)
        for _ in range(5):
            policy.observe_selection(resident, 1, (0, 17), [0, 1, 2, 3, 12, 13], [0.75] * 4 + [0.25] * 2)
        assert _kept(policy, resident) == [0, 1, 2, 3, *range(8, 20)]
        assert policy.credit_of(4) == 0.0 and 4 not in policy._snap  # gone, and forgotten


def test_credit_pool_ranks_by_pick_rate_not_by_time_in_the_pool():
    """Rows 0..7 spent 10 forwards in the pool and were picked in 4 (rate 0.4); rows 8..15
    came for the last 3 and were picked in each (rate 1); row 16 was never in it. Nine must
    go: by rate 16 and 0..7, by credit alone (which favours the rows that were there longest)
    16 and 8..15."""
    resident = list(range(20))
    for rate, want in ((True, [*range(8, 16), 17, 18, 19]), (False, [*range(8), 17, 18, 19])):
        policy = _credit_policy(window=4, budget=12, rate=rate)
        for step in range(7):
            policy.observe_selection(resident, 1, (0, 8), list(range(8)) if step < 4 else [], [1.0] * 8 if step < 4 else [])
        for _ in range(3):
            policy.observe_selection(resident, 1, (0, 16), list(range(8, 16)), [1.0] * 8)
        assert policy.credit_of(0) == 4.0 and policy.credit_of(0, column=1) == 10.0
        assert policy.credit_of(8) == policy.credit_of(8, column=1) == 3.0
        assert _kept(policy, resident) == want, rate


def test_credit_pool_probation_and_decay():
    resident = list(range(20))
    # six of 17 pool rows must go; rows 0..9 were picked. Without probation the unpicked go,
    # oldest first (10..15); with probation 6 the newest six (11..16) stay, so 10 and then
    # the oldest picked rows go
    for probation, want in ((0, [*range(10), *range(16, 20)]), (6, [*range(5, 10), *range(11, 20)])):
        policy = _credit_policy(window=4, budget=15, probation=probation)
        policy.observe_selection(resident, 1, (0, 17), list(range(10)), [1.0] * 10)
        assert _kept(policy, resident) == want, probation
    # decay: a block picked often long ago (0..3) loses to one picked once lately (4..16)
    policy = _credit_policy(window=4, budget=17, half_life=1)
    for _ in range(3):
        policy.observe_selection(resident, 1, (0, 17), [0, 1, 2, 3], [1.0] * 4)
    for _ in range(6):
        policy.observe_selection(resident, 1, (0, 17), [], [])
    policy.observe_selection(resident, 1, (0, 17), list(range(4, 17)), [0.25] * 13)
    assert 0 < policy.credit_of(0) < policy.credit_of(4)
    assert _kept(policy, resident) == list(range(4, 20))
    # a chunk's picks and exposure count once per token; its own tokens start afresh
    policy = _credit_policy()
    policy.observe_selection(resident, 1, (0, 20), [19], [0.5])
    assert policy.credit_of(19) == 0.5
    policy.observe_selection(resident, 3, (2, 10), [0], [0.5])
    assert policy.credit_of(19) == 0.0 and policy.credit_of(2) == 1.5 and policy.credit_of(2, column=1) == 4.0
    assert policy.credit_of(10, column=1) == 1.0  # outside the pool: no exposure


def test_credit_pool_carries_its_credits_through_a_resize_and_renormalizes():
    policy = _credit_policy(half_life=1)
    resident = list(range(10))
    policy.observe_selection(resident, 1, (0, 9), [1], [1.0])
    bigger = policy.resized(6, 30)
    assert isinstance(bigger, CreditPolicy) and (bigger.window, bigger.budget, bigger.decay) == (6, 30, 0.5)
    assert bigger.credit_of(1) == policy.credit_of(1) > 0
    assert CreditPolicy(4, 64).decay == CreditPolicy(4, 64, half_life=64).decay == pytest.approx(0.5 ** (1 / 64))
    for _ in range(400):  # 2 ** 400 > 1e100: the lazy factor is folded back into the credits
        bigger.observe_selection(resident, 1, (0, 9), [2], [1.0])
    assert bigger._w < 1e100 and bigger.credit_of(2) == pytest.approx(2.0)
    assert RetentionPolicy(4, 20).resized(5, 21) == RetentionPolicy(5, 21)


def test_policy_for_the_settings(tiny_qwen35):
    from heedful.errors import HeedfulError
    from heedful.kernels.block_select import KINDS
    from heedful.selector.config import SessionConfig, facts_of, resolve

    assert SCORES == KINDS
    cfg = SessionConfig(window=4, budget=20, sinks=0, auto_topk=2, block_size=4)
    assert type(policy_for(cfg)) is CreditPolicy  # the default pool
    assert type(policy_for(cfg.replace(auto_pool="fifo"))) is RetentionPolicy
    facts = facts_of(tiny_qwen35.model, tiny_qwen35.tokenizer)
    for field, bad in (("auto_pool", "lru"), ("auto_score", "max")):  # refused where configs are checked
        with pytest.raises(HeedfulError, match=field.replace("_", "-")):
            resolve(SessionConfig(window=4, budget=20, sinks=0, **{field: bad}), facts)


def test_script_config_accepts_the_pool_and_scoring_names():
    from heedful.app.script import check_config

    check_config({"auto_pool": "fifo", "auto_score": "fla"}, "config")
    for bad in ({"auto_pool": "lru"}, {"auto_score": 3}):
        with pytest.raises(ValueError, match="wrong type"):
            check_config(bad, "config")


@settings(max_examples=150, deadline=None)
@given(data=st.data(), window=st.integers(1, 6), budget_extra=st.integers(0, 14), probation=st.sampled_from([0, 2, None]),
       half_life=st.sampled_from([10 ** 18, 1]), rate=st.booleans())
def test_credit_pool_equals_a_per_token_oracle(data, window, budget_extra, probation, half_life, rate):
    """The vectorized pool (credits aligned with the rows, one lazy decay factor) against the
    rule token by token, through forwards, picks and rows leaving behind its back (drops,
    rewinds). Decay 1 or 1/2 per token and picks in quarters: every credit is exact."""
    budget = window + budget_extra
    policy = CreditPolicy(window, budget, 0, auto_topk=2, block_size=3, probation=probation, half_life=half_life,
                          rate=rate)
    decay, keep_new = policy.decay, 3 if probation is None else probation
    credit: dict[int, float] = {}
    exposure: dict[int, float] = {}
    resident: list[int] = []
    stream = 0
    pins = Spans()

    def value(t):
        if not rate:
            return credit.get(t, 0.0)
        return credit.get(t, 0.0) / exposure[t] if exposure.get(t) else 0.0

    for _ in range(data.draw(st.integers(1, 25))):
        op = data.draw(st.sampled_from(["forward", "forward", "forward", "drop", "rewind"]))
        if op == "drop" and resident:
            resident.remove(data.draw(st.sampled_from(resident)))
        elif op == "rewind" and stream:
            stream = data.draw(st.integers(0, stream))
            resident = [t for t in resident if t < stream]
        elif op == "forward":
            n_new = data.draw(st.integers(1, min(3, window)))
            got = _kept(policy, resident, stream, n_new, pins)
            pool = [r for r, t in enumerate(resident) if not policy.always(t, stream, n_new, pins)]
            room = budget - n_new - (len(resident) - len(pool))
            gone = []
            if len(pool) > room:
                excess = len(pool) - room
                older = pool[: max(len(pool) - keep_new, 0)]
                gone = pool[:excess] if excess >= len(older) else \
                    sorted(older, key=lambda r: (value(resident[r]), r))[:excess]
            assert got == [t for r, t in enumerate(resident) if r not in gone]
            resident = got + list(range(stream, stream + n_new))
            stream += n_new
            exposed = data.draw(st.integers(0, len(got)))
            picked = sorted(set(data.draw(st.lists(st.integers(0, max(exposed - 1, 0)), max_size=5)))) if exposed else []
            counts = [data.draw(st.integers(1, 4)) / 4 for _ in picked]
            policy.observe_selection(resident, n_new, (0, exposed), picked, counts)
            live = set(got)
            credit = {t: c * decay ** n_new for t, c in credit.items() if t in live}
            exposure = {t: c * decay ** n_new for t, c in exposure.items() if t in live}
            for t in got[:exposed]:
                exposure[t] = exposure.get(t, 0.0) + n_new
            for r, c in zip(picked, counts):
                credit[resident[r]] = credit.get(resident[r], 0.0) + c * n_new
        for t in resident:
            assert policy.credit_of(t) == credit.get(t, 0.0) and policy.credit_of(t, 1) == exposure.get(t, 0.0)
