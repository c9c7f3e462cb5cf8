"""Mid-session settings (Session.set): logged, validated, replayed, and kept for resume."""

from __future__ import annotations

import pytest

from heedful.errors import BudgetError, HeedfulError
from heedful.app.open import resume
from heedful.selector.session import Session
from heedful.store import Store
from tests.app.test_replay import _replay


def _session(lm, store):
    rec = store.new_session()
    s = Session(lm.model, lm.tokenizer, recorder=rec, gated=lm.gated, window=16, budget=48, seed=5)
    return s, rec


def test_set_is_logged_replayed_and_resumed(tiny_qwen35, tmp_path):
    store = Store.open(tmp_path / "a.db")
    s, rec = _session(tiny_qwen35, store)
    s.prompt("The vault code is 4821. Remember it.")
    list(s.generate(10))
    it = s.generate(30)
    for _ in range(5):
        next(it)
    s.set(temperature=0.9, top_p=0.8)  # while streaming: carries "at"
    list(it)
    s.set(window=8)
    list(s.generate(20))
    assert s.config.window == 8 and s.policy.window == 8
    rec.flush()
    sets = [e for e in store.events(rec.session_id) if e["op"] == "set"]
    assert sets[0]["at"] == len(s.token_ids) - 20 - 25 and sets[1] == {"op": "set", "window": 8}
    result, out, new_sid = _replay(tmp_path, store, rec.session_id, tiny_qwen35)
    assert result.session.token_ids == s.token_ids
    assert result.session.config.window == 8 and result.session.config.temperature == 0.9
    r = resume(store, rec.session_id, lm=tiny_qwen35)
    assert (r.config.window, r.config.temperature, r.config.top_p) == (8, 0.9, 0.8)


@pytest.mark.parametrize("changes,err", [({"window": 0}, BudgetError), ({"window": 100}, BudgetError),
                                         ({"temperature": -1}, HeedfulError), ({"top_p": 0}, HeedfulError),
                                         ({"budget": 10}, BudgetError), ({"budget": 4096}, BudgetError),
                                         ({"budget": "64"}, BudgetError), ({"sinks": 2}, HeedfulError)])
def test_bad_settings_are_refused_and_not_logged(tiny_qwen35, tmp_path, changes, err):
    store = Store.open(tmp_path / "a.db")
    s, rec = _session(tiny_qwen35, store)
    s.prompt("Alice met Bob.")
    n_events = len(store.events(rec.session_id))
    with pytest.raises(err):
        s.set(**changes)
    assert len(store.events(rec.session_id)) == n_events and s.config.window == 16


def test_the_store_follows_a_window_change_through_a_rewind(tiny_qwen35, tmp_path):
    """A rewind re-encodes the (new) window: the store's token states must agree."""
    from tests.app.test_replay import _assert_store_matches

    store = Store.open(tmp_path / "a.db")
    s, rec = _session(tiny_qwen35, store)
    s.prompt("The vault code is 4821. Remember it. " * 4)
    list(s.generate(40))
    s.set(window=24)
    s.rewind(len(s) - 30)  # the window [n - 54, n - 30) had been freed: it comes back
    rec.flush()
    _assert_store_matches(store, rec.session_id, s)


def test_budget_changes_reallocate_evict_and_resume(tiny_qwen35, tmp_path):
    """A larger budget lets more stay (here: a larger window fits); a smaller one evicts at
    once down to it; both are logged, replayed and kept for resume."""
    store = Store.open(tmp_path / "a.db")
    s, rec = _session(tiny_qwen35, store)  # window 16, budget 48
    s.prompt("The vault code is 4821. Remember it. " * 3)
    list(s.generate(20))
    with pytest.raises(BudgetError):
        s.set(window=60)  # does not fit in 48
    allocated = s.stats().allocated_bytes
    s.set(budget=96, window=60)
    assert s.cache.capacity == 96 and s.stats().allocated_bytes == 2 * allocated
    list(s.generate(60))
    assert len(s.retained()) == 60
    s.set(window=8, budget=20)  # smaller: evicts now, down to the window
    assert len(s.retained()) == 8 and s.cache.capacity == 20
    list(s.generate(10))
    assert s.stats().peak_resident <= 96 and len(s.retained()) == 8
    rec.flush()
    evictions = store.conn.execute("SELECT reason FROM evictions WHERE session = ?", (rec.session_id,)).fetchall()
    assert ("budget",) in evictions
    result, out, new_sid = _replay(tmp_path, store, rec.session_id, tiny_qwen35)
    assert result.session.token_ids == s.token_ids and result.session.retained() == s.retained()
    r = resume(store, rec.session_id, lm=tiny_qwen35)
    assert (r.config.window, r.config.budget, r.cache.capacity) == (8, 20, 20)
