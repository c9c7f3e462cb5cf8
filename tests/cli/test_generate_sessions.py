"""`heedful generate --db` records a run as a session; `--session ID` continues it headlessly
with its stored settings (only flags given override them); `heedful recall` brings evicted
text back in a stored session."""

from __future__ import annotations

import json


from heedful.app.replay import run_script
from heedful.app.script import parse_script
from heedful.store import Store

PROMPT = "The vault code is 4821. Remember it. The weather was calm and the lake was still."


def _summary(out: str) -> dict:
    return json.loads(out.splitlines()[-1])


def test_generate_records_then_continues_with_the_stored_settings(cli, tmp_path, tiny_qwen35_dir):
    db = tmp_path / "s.db"
    code, out, err = cli("generate", PROMPT, "--model", tiny_qwen35_dir, "--db", db, "-n", "12", "--window", "8",
                         "--budget", "24", "--temperature", "0.7", "--seed", "3", "--ignore-eos", "--json")
    assert code == 0, err
    first = _summary(out)
    assert first["session"] == 1 and first["prompt_tokens"] > 0 and first["pins"] == []
    # continue without a prompt: the stored temperature, seed and window stay in force
    code, out, err = cli("generate", "--db", db, "--session", 1, "--model", tiny_qwen35_dir, "-n", "5",
                         "--ignore-eos", "--json")
    assert code == 0, err
    assert _summary(out)["tokens"] == first["tokens"] + 5
    with Store.open(db) as store:
        events = store.events(1)
        resume = [e for e in events if e["op"] == "resume"][-1]
        assert resume["config"]["temperature"] == 0.7 and resume["config"]["seed"] == 3
        assert resume["config"]["window"] == 8 and resume["tokens"] == first["tokens"]
        assert store.session(1).tokens == first["tokens"] + 5
    # a flag given on the command line overrides, and is what the resume logs
    code, out, err = cli("generate", "--db", db, "--session", 1, "--model", tiny_qwen35_dir, "-n", "2",
                         "--window", "6", "--ignore-eos", "--json", " And then")
    assert code == 0, err
    with Store.open(db) as store:
        events = store.events(1)
    resume = [e for e in events if e["op"] == "resume"][-1]
    assert resume["config"]["window"] == 6 and resume["config"]["temperature"] == 0.7
    assert [e for e in events if e["op"] == "prompt"][-1]["text"] == " And then"
    # the whole log replays to the same tokens
    script = tmp_path / "log.jsonl"
    script.write_text("".join(json.dumps(e) + "\n" for e in events))
    with Store.open(db) as store:
        recorded = store.load(1).token_ids
    result = run_script(parse_script(script), script, model=str(tiny_qwen35_dir))
    assert result.session.token_ids == recorded


def test_generate_without_prompt_or_session_is_one_line(cli):
    code, out, err = cli("generate", "-n", "3")
    assert code == 2 and err.count("\n") == 1 and "PROMPT is required" in err


def test_headless_recall_of_evicted_text(cli, tmp_path, tiny_qwen35_dir):
    db = tmp_path / "s.db"
    code, out, err = cli("generate", PROMPT, "--model", tiny_qwen35_dir, "--db", db, "-n", "40", "--window", "8",
                         "--budget", "32", "--ignore-eos", "--json")
    assert code == 0, err
    code, out, err = cli("recall", "4821", "--db", db, "--session", 1, "--model", tiny_qwen35_dir, "--json")
    assert code == 0, err
    res = json.loads(out.splitlines()[-1])
    assert res["ranges"] and res["session"] == 1
    with Store.open(db) as store:
        events = store.events(1)
        texts = store.load(1).token_texts
    recall = [e for e in events if e["op"] == "recall"]
    assert [r["range"] for r in recall] == res["ranges"]
    a, b = res["pinned"][-1]
    assert "4821" in "".join(texts[a:b])  # the re-encoded copy is pinned
    code, out, err = cli("recall", "no such words", "--db", db, "--session", 1, "--model", tiny_qwen35_dir)
    assert code == 2 and "not found" in err and err.count("\n") == 1


def test_a_chat_session_resumes_and_its_exported_log_replays_byte_for_byte(cli, tmp_path, tiny_chat_dir):
    """generate --chat --system records the turns; --session continues the conversation with a
    new user turn; the exported events replay to the same tokens, sources and pins."""
    db, again, log = tmp_path / "c.db", tmp_path / "r.db", tmp_path / "e.jsonl"
    code, out, err = cli("generate", "--chat", "--system", "Be brief.", "My code is 4821.", "--pin", "4821",
                         "--model", tiny_chat_dir, "--db", db, "-n", "6", "--window", "16", "--budget", "48",
                         "--json")
    assert code == 0, err
    code, out, err = cli("generate", "--chat", "What is my code?", "--db", db, "--session", 1,
                         "--model", tiny_chat_dir, "-n", "6", "--json")
    assert code == 0, err
    code, _, err = cli("export", "--db", db, "--session", 1, "--what", "events", "-o", log)
    assert code == 0, err
    code, _, err = cli("replay", log, "--db", again, "--model", tiny_chat_dir)
    assert code == 0, err
    with Store.open(db) as a, Store.open(again) as b:
        x, y = a.load(1), b.load(1)
        assert x.token_ids == y.token_ids and x.token_sources == y.token_sources
        assert a.session(1).state.pins.to_list() == b.session(1).state.pins.to_list() != []
        says = [e for e in a.events(1) if e["op"] == "say"]
        assert [e["role"] for e in says] == ["system", "user", "user"]
        assert {"system", "user", "markup", "generated"} <= set(x.token_sources)
