"""`heedful bench tasks` on a tiny chat model: episodes built as their sources define them,
every policy through the engine, the table and the JSON line, bad input in one line (exit 2,
nothing written), and the peers' protocol with a fake runner."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from heedful.bench.tasks import peers
from heedful.bench.tasks.learned import task_type
from heedful.bench.tasks.policies import POLICIES, stream_texts
from heedful.bench.tasks.tasks import NEEDLE, TASKS, Counter, context_text, episode, score


def _run(cli, *args):
    return cli("bench", "tasks", *args)


@pytest.mark.parametrize("task", TASKS)
def test_episodes_hold_their_answers_and_pins(tiny_chat, task):
    tok = tiny_chat.tokenizer
    count = Counter(tok)
    ep = episode(task, 3, 600, tok, count)
    assert ep == episode(task, 3, 600, tok, count)  # seeded
    assert ep != episode(task, 4, 600, tok, count)
    pieces, question = stream_texts(ep, tok)
    text = "".join(t for t, _ in pieces)
    n = len(tok(text + question, add_special_tokens=False)["input_ids"])
    assert 0.8 * 600 <= n <= 1.3 * 600, n
    for t, pins in pieces:  # what the person pins is in the piece it streams with
        assert all(p in t for p in pins)
    pinned = [p for _, pins in pieces for p in pins]
    assert pinned and all(any(a in p for p in pinned) for a in ep["answers"] if task != "vt")
    if ep["kind"] == "text":
        body = context_text(ep)
        assert all(a in body for a in ep["answers"])
        first = min(body.index(p) for p in pinned)
        assert first < 0.85 * len(body)  # the needles sit inside the haystack, not at its end
        assert "magic" not in ep["question"] or "special magic number" in ep["question"]
    else:
        assert ep["turns"][0]["role"] == "user" and ep["answers"][0] in ep["turns"][0]["text"]
        assert len(ep["turns"]) > 10 and ep["answers"][0] not in question


def test_needles_follow_ruler():
    assert NEEDLE.format(key="copper-candle", value="7624039") == \
        "One of the special magic numbers for copper-candle is: 7624039."
    assert score("The numbers are 1234567 and 7654321.", ["1234567", "7654321"]) == 1.0
    assert score("1234567", ["1234567", "7654321"]) == 0.5
    assert score("nothing", ["1234567"]) == 0.0


def test_bench_tasks_every_policy_on_a_tiny_chat_model(cli, tiny_chat_dir, tmp_path):
    png = tmp_path / "t.png"
    code, out, err = _run(cli, "--model", tiny_chat_dir, "--dtype", "float32", "--tasks",
                          "niah_single-noise,chat_recall,vt", "--contexts", "256", "--budgets", "1/8,1/4",
                          "--seeds", "1", "--peers", "none", "--png", png, "--json", "--chunk", "16")
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert set(summary["accuracy"]) == set(POLICIES)
    assert set(summary["by_task"]) == {"niah_single-noise", "chat_recall", "vt"}
    assert set(summary["accuracy"]["window"]) == {"256 1/8", "256 1/4"}
    rows = [json.loads(x) for x in lines if x.startswith('{"policy"')]
    assert len(rows) == 3 * (1 + 2 * (len(POLICIES) - 1))
    for r in rows:
        assert 0 <= r["score"] <= 1 and r["rows"] in (None, 32, 64)
    pins = [r for r in rows if r["policy"] == "pins"]
    assert all(r["pins"] >= 1 for r in pins if r["rows"] == 64)  # the person pinned as the text streamed
    assert set(summary["learned"]) == {"niah_single", "chat_recall", "vt"}  # one picker per task type
    for kind, info in summary["learned"].items():  # trained on every other type, never its own
        assert info["trained_on"] and all(task_type(t) != kind for t in info["trained_on"])
        assert len({task_type(t) for t in info["trained_on"]}) == 5
    assert "ms_per_token" in summary and "stock full-cache" in summary["ms_per_token"]
    for task in ("niah_single-noise", "chat_recall", "vt"):
        assert f"\n{task}: accuracy" in out


@pytest.mark.parametrize("args, words", [
    (["--tasks", "niah_single-noise,nope"], "nope"),
    (["--policies", "full,magic"], "magic"),
    (["--budgets", "1/1024", "--contexts", "1024"], "1/1024"),
    (["--budgets", "3/2"], "3/2"),
    (["--contexts", "100"], "100"),
])
def test_bad_input_is_one_line_and_writes_nothing(cli, tmp_path, args, words):
    png = tmp_path / "t.png"
    code, out, err = _run(cli, "--peers", "none", "--png", png, *args)
    assert code == 2
    assert words in err and len(err.strip().splitlines()) == 1
    assert not png.exists() and not out


def test_a_context_past_the_model_is_refused(cli, tiny_chat_dir, tmp_path):
    code, _, err = _run(cli, "--model", tiny_chat_dir, "--contexts", "1024", "--budgets", "1/8", "--peers", "none",
                        "--png", tmp_path / "t.png")
    assert code == 2 and "positions" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t.png").exists()


def test_a_peer_environment_that_cannot_be_made(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HEEDFUL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(peers, "base_python", lambda: str(tmp_path / "no-python"))
    code, out, err = _run(cli, "--peers", "kvpress", "--png", tmp_path / "t.png")
    errors = [x for x in err.strip().splitlines() if not x.startswith("peers: ")]  # progress: what it tried
    assert code == 2 and len(errors) == 1 and "--peers kvpress" in errors[0], err
    assert not (tmp_path / "t.png").exists()
    assert not any((tmp_path / "cache" / "peers").iterdir())  # no half environment left


FAKE = textwrap.dedent("""
    import json, sys
    print("some library's banner")
    print(json.dumps({"ready": True, "kvpress": "fake", "transformers": "0"}), flush=True)
    for line in sys.stdin:
        r = json.loads(line)
        ok = r["press"] in ("none", "snapkv")
        src = r.get("context") or ""
        ans = src.split("is: ")[1][:7] if ok and "is: " in src else "I do not know"
        print(json.dumps({"id": r["id"], "answer": ans, "seconds": 0.01, "tokens": 1}), flush=True)
""")


def test_peer_protocol_reads_back_answers(tiny_chat, tmp_path):
    runner = tmp_path / "runner.py"
    runner.write_text(FAKE)
    tok = tiny_chat.tokenizer
    eps = [episode("niah_single-noise", 0, 400, tok), episode("chat_recall", 0, 400, tok)]
    reqs = peers.requests(eps, tok, ["snapkv", "tova"], lambda ep: [25, 50])
    assert len(reqs) == 2 * (1 + 2 * 2)
    chat = [r for r in reqs if r["episode"] == 1][0]
    assert chat["context_ids"] and chat["question_ids"] and "context" not in chat
    answers = peers.run_requests(sys.executable, "unused", reqs, runner=runner)
    assert answers["_ready"]["kvpress"] == "fake"
    needle = [r for r in reqs if r["episode"] == 0]
    assert score(answers[needle[0]["id"]]["answer"], eps[0]["answers"]) == 1.0  # "none" read the needle
    assert {answers[r["id"]]["answer"] for r in needle if r["press"] == "tova"} == {"I do not know"}


def test_a_runner_that_dies_is_one_error(tmp_path):
    runner = tmp_path / "runner.py"
    runner.write_text("import sys\nsys.stderr.write('ImportError: no kvpress\\n')\nsys.exit(3)\n")
    with pytest.raises(peers.PeerError, match="no kvpress"):
        peers.run_requests(sys.executable, "unused", [{"id": "0:none:0", "press": "none"}], runner=runner)


def test_from_renders_earlier_lines(cli, tmp_path):
    lines = tmp_path / "a.jsonl"
    rows = [{"policy": "full", "rows": None, "score": 1.0, "task": "vt", "seed": 0, "context": 1024, "fraction": None,
             "gen_seconds": 1.0, "gen_tokens": 10},
            {"policy": "pins", "rows": 128, "score": 0.6, "task": "vt", "seed": 0, "context": 1024, "fraction": "1/8",
             "gen_seconds": 0.5, "gen_tokens": 10},
            {"policy": "kvpress:snapkv", "rows": 128, "score": 0.2, "task": "vt", "seed": 0, "context": 1024,
             "fraction": "1/8"}]
    lines.write_text("a banner\n" + "".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = _run(cli, "--from", lines, "--png", tmp_path / "f.png")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["by_task"]["vt"] == {"full": {"1k 1/8": 1.0}, "pins": {"1k 1/8": 0.6},
                                        "kvpress:snapkv": {"1k 1/8": 0.2}}
    assert summary["ms_per_token"] == {"full": 100.0, "pins": 50.0}
    assert (tmp_path / "f.png").exists()
    lines.write_text('{"policy": "full", "fraction": 3}\n')
    code, _, err = _run(cli, "--from", lines, "--png", tmp_path / "g.png")
    assert code == 2 and "a.jsonl:1" in err and not (tmp_path / "g.png").exists()
