"""LoRA adapters: heedful learn --lora writes a peft adapter beside its picker; --adapter
loads any peft LoRA adapter (merged) for generate, replay and bench retention; a picker
learned over an adapter needs it."""

from __future__ import annotations

import json

import pytest

from heedful.errors import ModelLoadError
from heedful.models.loading import load_model
from tests.learn.conftest import summary_of


def test_learn_lora_writes_an_adapter_that_loads(cli, recorded, tiny_qwen35_dir, tmp_path):
    out = tmp_path / "pk"
    code, stdout, err = cli("learn", "--db", recorded[0], "--out", out, "--model", tiny_qwen35_dir, "--epochs", 2,
                            "--lora", "--lora-steps", 3, "--json")
    assert code == 0, err
    s = json.loads(stdout)
    assert s["lora"]["steps"] == 3 and 0 <= s["lora"]["pinned_mass_before"] <= 1
    assert {"adapter_config.json", "adapter_model.safetensors", "picker.json"} <= {p.name for p in out.iterdir()}
    meta = json.loads((out / "picker.json").read_text())
    lm = load_model(str(tiny_qwen35_dir), adapter=str(out))
    assert meta["adapter_fingerprint"] == lm.model.heedful_adapter == s["lora"]["fingerprint"]
    # the adapter changes the model's outputs, and generation, replay and the bench run with it
    base = load_model(str(tiny_qwen35_dir))
    assert any((a - b).abs().max() > 0 for a, b in zip(lm.model.parameters(), base.model.parameters()))
    code, out_, err = cli("generate", "The vault code is 4821.", "-n", 4, "--model", tiny_qwen35_dir, "--adapter", out,
                          "--picker", out, "--auto-pin", "--json")
    assert code == 0, err
    assert "auto_pins" in summary_of(out_)
    # a picker learned over the adapter is refused without it, and a plain picker refuses the adapter
    code, _, err = cli("generate", "hi", "-n", 1, "--model", tiny_qwen35_dir, "--picker", out)
    assert code == 2 and err.count("\n") == 1 and "--adapter" in err, err
    script = tmp_path / "s.jsonl"
    script.write_text('{"op": "config", "window": 8, "budget": 32}\n{"op": "prompt", "text": "The vault code."}\n'
                      '{"op": "generate", "n": 2}\n')
    code, _, err = cli("replay", script, "--db", tmp_path / "r.db", "--model", tiny_qwen35_dir, "--adapter", out)
    assert code == 0, err
    code, _, err = cli("bench", "retention", "--model", tiny_qwen35_dir, "--adapter", out, "--budgets", "40",
                       "--episodes", 1, "--filler", 1, "--policies", "topk,h2o", "--png", tmp_path / "p.png")
    assert code == 0 and "adapter" in _, err


def test_bad_adapters_are_one_line(cli, tiny_qwen35_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_model(str(tiny_qwen35_dir), adapter=str(tmp_path / "none"))
    (tmp_path / "empty").mkdir()
    code, _, err = cli("generate", "hi", "--model", tiny_qwen35_dir, "--adapter", tmp_path / "empty")
    assert code == 2 and err.count("\n") == 1 and "adapter_config.json" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{}")
    (bad / "adapter_model.safetensors").write_bytes(b"nope")
    code, _, err = cli("generate", "hi", "--model", tiny_qwen35_dir, "--adapter", bad)
    assert code == 2 and err.count("\n") == 1 and "--adapter" in err, err
