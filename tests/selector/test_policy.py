"""The retention policy's row spans (found by bisection) against the per-token definition."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from heedful.selector.policy import RetentionPolicy, rows_of
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
