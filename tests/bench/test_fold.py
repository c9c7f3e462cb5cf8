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


def test_bench_fold_with_a_learned_compressor_matches_training_forward(capsys, tmp_path, tiny_qwen35,
                                                                       tiny_qwen35_dir):
    """The fold figure through the engine equals the one-forward fold attention that trains the
    compressor (heedful/train/compressor.py), and the mean-pooled run is reported beside it."""
    from heedful.selector.compressor import LearnedPool
    from heedful.train.compressor import FoldPattern, fold_loss, model_sizes

    comp = LearnedPool(**model_sizes(tiny_qwen35.model), block=4)
    with torch.no_grad():
        for p in comp.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.2)
    comp.save(tmp_path / "c")
    text = tmp_path / "t.txt"
    text.write_text("The vault code is 4821. Remember it. Alice met Bob at the station at noon. " * 2)
    with pytest.raises(SystemExit) as e:
        heedful.cli.main(["bench", "fold", "--text", str(text), "--model", str(tiny_qwen35_dir), "--window", "8",
                          "--budget", "14", "--fold-block", "4", "--fold-compressor", str(tmp_path / "c"),
                          "--dtype", "float32", "--json"])
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    r = json.loads(out.out.splitlines()[-1])
    assert set(r["ppl"]) == {"full", "window", "fold", "fold_mean"} and r["segments"] == 1
    ids = torch.tensor([tiny_qwen35.tokenizer(text.read_text())["input_ids"][: r["tokens"]]])
    for name, c in (("fold", comp.requires_grad_(False)), ("fold_mean", None)):
        with torch.no_grad():
            nll = fold_loss(tiny_qwen35.model, ids, FoldPattern(8, 6, 4), c, only_folded=False)
        assert r["ppl"][name] == pytest.approx(math.exp(float(nll)), rel=1e-3), name
    assert r["ppl"]["fold"] != r["ppl"]["fold_mean"]


def test_bench_fold_runs_an_ungated_model_without_sinks(capsys, tmp_path, tiny_llama_dir):
    """Sinks (an ungated model's default) would take rows of the window-only run: no run has any."""
    text = tmp_path / "t.txt"
    text.write_text("The vault code is 4821. Remember it. Alice met Bob at the station at noon. " * 2)
    with pytest.raises(SystemExit) as e:
        heedful.cli.main(["bench", "fold", "--text", str(text), "--model", str(tiny_llama_dir), "--window", "8",
                          "--budget", "16", "--fold-block", "4", "--dtype", "float32", "--json"])
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    assert set(json.loads(out.out.splitlines()[-1])["ppl"]) == {"full", "window", "fold"}
