"""`heedful bench fold`: its full-attention figure is the stock model's perplexity."""

from __future__ import annotations

import json
import math

import pytest
import torch

import heedful.cli
from heedful.models.loading import load_model


def test_bench_fold_json_and_full_attention_equals_stock(capsys, tmp_path, tiny_qwen35_dir):
    text = tmp_path / "t.txt"
    text.write_text("The vault code is 4821. Remember it. Alice met Bob at the station at noon. " * 2)
    with pytest.raises(SystemExit) as e:
        heedful.cli.main(["bench", "fold", "--text", str(text), "--model", str(tiny_qwen35_dir), "--window", "8",
                          "--budget", "24", "--fold-block", "4", "--dtype", "float32", "--json"])
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    r = json.loads(out.out.splitlines()[-1])
    assert set(r["ppl"]) == {"full", "window", "fold"} and r["budget"] == 24
    stock = load_model(str(tiny_qwen35_dir), dtype="float32", device="cpu", attn_implementation="sdpa")
    ids = stock.tokenizer(text.read_text())["input_ids"][: r["tokens"]]
    with torch.inference_mode():
        logits = stock.model(input_ids=torch.tensor([ids])).logits[0].float()
    nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]))
    assert r["ppl"]["full"] == pytest.approx(math.exp(float(nll)), rel=1e-3)
    assert r["ppl"]["window"] != r["ppl"]["full"] and r["ppl"]["fold"] != r["ppl"]["window"]


def test_bench_fold_refuses_a_window_that_leaves_no_room(capsys, tmp_path, tiny_qwen35_dir):
    text = tmp_path / "t.txt"
    text.write_text("hello there " * 10)
    with pytest.raises(SystemExit) as e:
        heedful.cli.main(["bench", "fold", "--text", str(text), "--model", str(tiny_qwen35_dir), "--window", "24",
                          "--budget", "24"])
    assert e.value.code == 2 and "must be smaller" in capsys.readouterr().err
