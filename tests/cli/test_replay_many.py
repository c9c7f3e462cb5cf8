"""`heedful replay A.jsonl B.jsonl ...`: one model load, one session per script, each script
landing or not on its own; exit 2 if any failed."""

from __future__ import annotations

import json


from heedful.store import Store

GOOD = '{"op": "config", "window": 8, "budget": 32}\n{"op": "prompt", "text": "The vault code is 4821."}\n'


def test_many_scripts_one_session_each(cli, tmp_path, tiny_qwen35_dir, monkeypatch):
    import heedful.app.replay as replay_mod

    loads = []
    real = replay_mod.load_model
    monkeypatch.setattr(replay_mod, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    paths = []
    for k in range(3):
        p = tmp_path / f"s{k}.jsonl"
        p.write_text(GOOD + f'{{"op": "pin", "text": "4821"}}\n{{"op": "generate", "n": {3 + k}, '
                            '"stop_at_eos": false}\n')
        paths.append(p)
    db = tmp_path / "out.db"
    code, out, err = cli("replay", *paths, "--db", db, "--model", tiny_qwen35_dir, "--json")
    assert code == 0, err
    assert len(loads) == 1
    summaries = [json.loads(ln) for ln in out.splitlines() if '"summary"' in ln]
    assert [s["script"] for s in summaries] == [str(p) for p in paths]
    with Store.open(db) as s:
        infos = s.sessions()
        assert [i.id for i in infos] == [x["session"] for x in summaries]
        assert [s.events(i.id)[-1]["n"] for i in infos] == [3, 4, 5]


def test_a_failing_script_is_reported_and_the_others_land(cli, tmp_path, tiny_qwen35_dir):
    ok1, bad_run, bad_parse, ok2 = (tmp_path / f"{n}.jsonl" for n in ("ok1", "badrun", "badparse", "ok2"))
    ok1.write_text(GOOD)
    ok2.write_text(GOOD + '{"op": "generate", "n": 2}\n')
    bad_run.write_text(GOOD + '{"op": "generate", "n": 2}\n{"op": "pin", "text": "no such words"}\n')
    bad_parse.write_text(GOOD + '{"op": "teleport"}\n')
    db = tmp_path / "out.db"
    code, out, err = cli("replay", ok1, bad_run, bad_parse, ok2, "--db", db, "--model", tiny_qwen35_dir)
    assert code == 2
    lines = err.strip().splitlines()
    assert any("badrun.jsonl:4: " in ln and "not found" in ln for ln in lines), err
    assert any("badparse.jsonl:3: " in ln and "unknown op" in ln for ln in lines), err
    assert "2 of 4 scripts failed" in lines[-1] and "Traceback" not in err
    with Store.open(db) as s:
        infos = s.sessions()
        assert len(infos) == 2  # ok1 and ok2, nothing of the failed ones
        assert all("no such words" not in json.dumps(s.events(i.id)) for i in infos)


def test_one_failing_script_alone_is_one_line(cli, tmp_path, tiny_qwen35_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(GOOD + '{"op": "pin", "text": "no such words"}\n')
    code, out, err = cli("replay", bad, "--db", tmp_path / "o.db", "--model", tiny_qwen35_dir)
    assert code == 2 and err.count("\n") == 1 and "bad.jsonl:3: " in err
    assert not (tmp_path / "o.db").exists()
