"""`heedful learn` end to end on the tiny model: files, figures, one-line errors, nothing
written on error, and pickers refused for another model."""

from __future__ import annotations

import json

from heedful.learn.picker import Picker
from heedful.models.loading import load_model
from heedful.store import Store


def test_learn_writes_a_picker_with_its_figures(cli, recorded, tiny_qwen35_dir, tmp_path):
    out = tmp_path / "pk"
    code, stdout, err = cli("learn", "--db", recorded[0], "--out", out, "--model", tiny_qwen35_dir, "--epochs", 3,
                            "--layers", "0,1", "--json")
    assert code == 0, err
    s = json.loads(stdout)
    assert s["sessions"]["with_pins"] == 12 and s["sessions"]["held_out"] >= 1
    for k in ("precision", "recall", "pr_auc", "precision_at_budget"):
        assert 0.0 <= s["held_out"][k] <= 1.0
    assert 0 < s["scoring_cost"]["ms_per_token"]
    assert sorted(p.name for p in out.iterdir()) == ["picker.json", "picker.safetensors"]
    meta = json.loads((out / "picker.json").read_text())
    assert meta["layers"] == [0, 1] and 0 < meta["threshold"] < 1 and meta["training"]["held_out"] == s["held_out"]
    assert meta["model_fingerprint"] and meta["tokenizer_fingerprint"] and meta["adapter_fingerprint"] is None
    assert "hidden states" in err  # the progress bars
    Picker.load(out, load_model(str(tiny_qwen35_dir), dtype="float32"))  # the model it was made for
    # written again over a picker folder, not over anything else
    code, _, err = cli("learn", "--db", recorded[0], "--out", out, "--model", tiny_qwen35_dir, "--epochs", 1)
    assert code == 0, err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, _, err = cli("learn", "--db", recorded[0], "--out", other, "--model", tiny_qwen35_dir)
    assert code == 2 and err.count("\n") == 1 and "not a folder heedful learn wrote" in err
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_bad_input_is_one_line_and_writes_nothing(cli, tmp_path, tiny_qwen35_dir):
    db = tmp_path / "nopins.db"
    script = tmp_path / "s.jsonl"
    script.write_text('{"op": "config", "window": 8, "budget": 32}\n{"op": "prompt", "text": "The vault code."}\n')
    assert cli("replay", script, "--db", db, "--model", tiny_qwen35_dir)[0] == 0
    out = tmp_path / "pk"
    code, _, err = cli("learn", "--db", db, "--out", out, "--model", tiny_qwen35_dir)
    assert code == 2 and err.count("\n") == 1 and "no pinned tokens" in err, err
    assert not out.exists() and not list(tmp_path.glob(".pk*"))
    code, _, err = cli("learn", "--db", tmp_path / "none.db", "--out", out)
    assert code == 2 and "no such database" in err and not (tmp_path / "none.db").exists()
    code, _, err = cli("learn", "--db", db, "--out", out, "--session", 99, "--model", tiny_qwen35_dir)
    assert code == 2 and "--session 99" in err
    code, _, err = cli("learn", "--db", db)
    assert code == 2 and "--out" in err
    with Store.open(db, readonly=True) as s:
        assert len(s.sessions()) == 1


def test_a_picker_for_another_model_is_refused(cli, picker_dir, tiny_llama_dir, tmp_path):
    for args in (["generate", "hello", "-n", "2", "--model", tiny_llama_dir, "--picker", picker_dir, "--auto-pin",
                  "--db", tmp_path / "g.db"],
                 ["generate", "hello", "-n", "2", "--model", tiny_llama_dir, "--picker", tmp_path]):
        code, out, err = cli(*args)
        assert code == 2 and err.count("\n") == 1 and "--picker" in err, err
    assert "made for another model" in cli(*["generate", "hi", "--model", tiny_llama_dir, "--picker",
                                            picker_dir])[2]
    assert not (tmp_path / "g.db").exists() or not Store.open(tmp_path / "g.db").sessions()
    code, _, err = cli("generate", "hi", "--auto-pin")
    assert code == 2 and "--auto-pin needs --picker" in err


def test_episodes_command_and_bench_retention_with_a_picker(cli, recorded, picker_dir, tiny_qwen35_dir, tmp_path):
    png = tmp_path / "r.png"
    code, out, err = cli("bench", "retention", "--model", tiny_qwen35_dir, "--budgets", "48", "--episodes", "2",
                         "--episodes-file", recorded[1] / "episodes.jsonl", "--picker", picker_dir,
                         "--policies", "window,pins", "--png", png, "--json", "--dtype", "float32")
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])[0]
    assert set(res["accuracy"]) == {"window", "pins", "learned"} and res["streamed"]
    assert "learned" in out and png.exists()
    code, _, err = cli("bench", "retention", "--policies", "learned")
    assert code == 2 and "needs --picker" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "facts": ["b"], "question": "q", "answer": "x"}\n')
    code, _, err = cli("bench", "retention", "--episodes-file", bad, "--model", tiny_qwen35_dir)
    assert code == 2 and "bad.jsonl:1: fact" in err and err.count("\n") == 1
