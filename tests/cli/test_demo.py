"""`heedful demo`: the same episodes answered with pins, window only and full attention."""

from __future__ import annotations

import json

import pytest

import heedful.cli
from heedful.models.loading import default_model_dir


def _run(capsys, *args):
    with pytest.raises(SystemExit) as e:
        heedful.cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_demo_json_shape(capsys, tiny_qwen35_dir):
    code, out, err = _run(capsys, "demo", "--model", tiny_qwen35_dir, "--episodes", 2, "--json")
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x["episode"] for x in lines[:-1]] == [1, 2]
    for x in lines[:-1]:
        assert set(x) >= {"facts", "question", "answer", "pins", "window", "full"}
        assert all(isinstance(x[p]["correct"], bool) for p in ("pins", "window", "full"))
    s = lines[-1]
    assert s["event"] == "summary" and s["episodes"] == 2
    for p in ("pins", "window", "full"):
        assert s["accuracy"][p] == sum(x[p]["correct"] for x in lines[:-1]) / 2


@pytest.mark.skipif(default_model_dir() is None, reason="no embedded default model in this build")
def test_demo_shows_the_point_with_the_embedded_model(capsys):
    """The embedded model, greedy: the pinned facts are recalled where the window alone fails
    (5/5 vs 0/5 when measured; the test asks only that pins win clearly)."""
    code, out, err = _run(capsys, "demo", "--model", "default", "--episodes", 5)
    assert code == 0, err
    last = [x for x in out.splitlines() if x.startswith("over 5 episodes")][0]
    pinned = int(last.split("facts pinned ")[1].split("/")[0])
    window = int(last.split("window only ")[1].split("/")[0])
    assert pinned >= window + 3, last


def test_demo_with_a_chat_model_is_a_conversation_and_its_summary_counts_the_answers(capsys, tiny_chat_dir):
    code, out, err = _run(capsys, "demo", "--model", tiny_chat_dir, "--episodes", 2, "--turns", 3, "--budget", 64,
                          "--json")
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    runs = ("pin-content", "window", "sinks+window", "full")
    for x in lines[:-1]:
        assert x["fact"].endswith(f"{x['answer']}.") and x["tokens"] > 3 * 10
        assert all(isinstance(x[p]["correct"], bool) and isinstance(x[p]["output"], str) for p in runs)
    s = lines[-1]
    assert s["event"] == "summary" and s["turns"] == 3 and s["budget"] == 64
    for p in runs:
        assert s["accuracy"][p] == sum(x[p]["correct"] for x in lines[:-1]) / 2


def test_demo_without_a_model_takes_the_real_model_where_installed(monkeypatch):
    from heedful.cli.demo import default_demo_model
    from heedful.models import named

    monkeypatch.delenv("HEEDFUL_MODEL", raising=False)
    monkeypatch.setattr(named.NamedModel, "gguf_path", lambda self: None)
    assert default_demo_model(None) is None and default_demo_model("x") == "x"
    monkeypatch.setattr(named.NamedModel, "gguf_path", lambda self: __import__("pathlib").Path("/x.gguf"))
    assert default_demo_model(None) == "smollm2"
    monkeypatch.setenv("HEEDFUL_MODEL", "default")
    assert default_demo_model(None) is None
