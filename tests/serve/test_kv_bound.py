"""`--max-kv-bytes` holds for the banks' real bytes: a session's bank grows once a row is
dropped, folded or evicted (the rotary masters) and with `heedful.budget`, and the pool
counts each session at the most it can grow to, so the sum of every held session's
allocated bytes stays under the bound at the end of every request, and a bound too small
for one session is refused when the pool starts."""

from __future__ import annotations

import httpx
import pytest

from heedful.errors import HeedfulError
from tests.serve.conftest import SETTINGS, serve


def _grown_bytes(tiny_chat, tmp_path) -> int:
    """The KV bytes of a session of the default budget after a drop (its bank grown)."""
    probe = serve(tiny_chat, tmp_path / "probe.db")
    try:
        with httpx.Client(base_url=probe.url, timeout=60) as c:
            r = c.post("/completions", json={"prompt": "The vault code is 4821. We walked by the lake.",
                                             "max_tokens": 2, "heedful": {"drop": ["lake"], "new": True}})
            assert r.status_code == 200, r.text
            return r.json()["heedful"]["kv_bytes"]
    finally:
        probe.stop()
        probe.store.close()


def test_drops_folds_and_budgets_never_pass_the_bound(tiny_chat, tmp_path):
    grown = _grown_bytes(tiny_chat, tmp_path)
    limit = 2 * grown - 1  # room for one grown session, not two
    running = serve(tiny_chat, tmp_path / "bound.db", max_kv_bytes=limit)
    pool, seen = running.pool, []
    checkin = pool.checkin

    def measured(live):  # every held session's real bytes, before the pool settles anything
        with pool._cond:
            seen.append(sum(v.session.stats().allocated_bytes for v in pool._all))
        checkin(live)

    pool.checkin = measured
    try:
        with httpx.Client(base_url=running.url, timeout=60) as c:
            sids = []
            for k in range(3):
                prompt = f"Client {k}: the code is 48{k}. We walked by the lake."
                r = c.post("/completions", json={"prompt": prompt, "max_tokens": 2,
                                                 "heedful": {"drop": ["lake"], "new": True}})
                assert r.status_code == 200, r.text
                assert r.json()["heedful"]["kv_bytes"] <= limit
                sids.append(r.json()["heedful"]["session"])
            r = c.post("/completions", json={"prompt": " And the boat was red.", "max_tokens": 2,
                                             "heedful": {"session": sids[0], "budget": SETTINGS["budget"] + 32,
                                                         "fold": [{"target": "the boat", "gist": "boat"}]}})
            assert r.status_code == 200, r.text
            r = c.post(f"/sessions/{sids[1]}/marks", json={"budget": SETTINGS["budget"] + 16, "drop": ["code"]})
            assert r.status_code == 200, r.text
            r = c.post("/completions", json={"prompt": " More.", "max_tokens": 2,
                                             "heedful": {"session": sids[2], "budget": 10**6}})
            assert r.status_code == 400 and r.json()["error"]["param"] == "heedful.budget", r.text
        assert len(seen) >= 5 and max(seen) <= limit, (seen, limit)
        assert pool.released > 0
        held = sum(v.session.stats().allocated_bytes for v in pool._all)
        assert held <= pool.kv_bytes() <= limit
    finally:
        running.stop()
        running.store.close()


def test_a_bound_smaller_than_one_session_is_refused(tiny_chat, tmp_path):
    from heedful.serve.pool import Pool
    from heedful.store import Store

    with Store.open(tmp_path / "small.db") as store:
        for limit in (0, 1000):
            with pytest.raises(HeedfulError, match="--max-kv-bytes"):
                Pool(tiny_chat, store, dict(SETTINGS), max_kv_bytes=limit)
