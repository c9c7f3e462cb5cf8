"""bench chat: every policy on the same scripted conversations; the summary counts the
answers; what each pin holds; bad policy names and base models refused in one line."""

from __future__ import annotations

import json

from heedful.bench.chat import POLICIES, conversation, run_conversation


def test_the_summary_counts_the_answers_of_every_policy(cli, tiny_chat_dir):
    code, out, err = cli("bench", "chat", "--model", tiny_chat_dir, "--conversations", 2, "--turns", 1,
                          "--budget", 200, "--pin-rows", 100, "--json")
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    runs, summary = lines[:-1], lines[-1]
    assert sorted((r["conversation"], r["policy"]) for r in runs) == sorted((k, p) for k in (0, 1) for p in POLICIES)
    for p in POLICIES:
        assert summary["accuracy"][p] == sum(r["right"] for r in runs if r["policy"] == p) / 2
    full = [r for r in runs if r["policy"] == "full"]
    assert all(r["resident"] == r["tokens"] for r in full)  # full attention keeps every row
    assert all(r["resident"] <= 200 for r in runs if r["policy"] != "full")


def test_each_pin_holds_what_it_says(tiny_chat):
    conv = conversation(0, 1)
    fact, content, turn = (run_conversation(tiny_chat, conv, p, 200, pin_rows=100) for p in ("pin-fact", "pin-content", "pin-turn"))
    # rows held beyond the window and sinks grow with what is pinned: digits < sentence < whole turn
    assert fact["resident"] < content["resident"] < turn["resident"]


def test_a_base_model_and_an_unknown_policy_are_one_line(cli, tiny_qwen35_dir, tiny_chat_dir):
    code, _, err = cli("bench", "chat", "--model", tiny_qwen35_dir, "--conversations", 1)
    assert code == 2 and "has no chat template" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("bench", "chat", "--model", tiny_chat_dir, "--policies", "full,nope")
    assert code == 2 and "unknown policy nope" in err
