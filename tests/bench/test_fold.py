"""`heedful bench fold`: its full-attention figure is the stock model's perplexity."""

from __future__ import annotations

import json
import math

import pytest
import torch

import heedful.cli
from heedful.models.loading import load_model

TEXT = "The vault code is 4821. Remember it. Alice met Bob at the station at noon. " * 2


def _bench_fold(capsys, tmp_path, model_dir, *options) -> tuple[dict, str]:
    """Runs `heedful bench fold --json` on TEXT (W 8, F 4, float32): its JSON and the text."""
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    with pytest.raises(SystemExit) as e:
        heedful.cli.main(["bench", "fold", "--text", str(text), "--model", str(model_dir), "--window", "8",
                          "--fold-block", "4", "--dtype", "float32", "--json", *options])
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    return json.loads(out.out.splitlines()[-1]), TEXT


def test_bench_fold_json_and_full_attention_equals_stock(capsys, tmp_path, tiny_qwen35_dir):
    r, text = _bench_fold(capsys, tmp_path, tiny_qwen35_dir, "--budget", "24")
    assert set(r["ppl"]) == {"full", "window", "fold"} and r["budget"] == 24
    stock = load_model(str(tiny_qwen35_dir), dtype="float32", device="cpu", attn_implementation="sdpa")
    ids = stock.tokenizer(text)["input_ids"][: r["tokens"]]
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
    from heedful.selector.compressor import model_sizes
    from heedful.train.compressor import FoldPattern, fold_loss
    from tests.tiny_models import moved_compressor

    comp = moved_compressor(model_sizes(tiny_qwen35.model), block=4, seed=1)
    comp.save(tmp_path / "c")
    r, text = _bench_fold(capsys, tmp_path, tiny_qwen35_dir, "--budget", "14", "--fold-compressor", str(tmp_path / "c"))
    assert set(r["ppl"]) == {"full", "window", "fold", "fold_mean"} and r["segments"] == 1
    ids = torch.tensor([tiny_qwen35.tokenizer(text)["input_ids"][: r["tokens"]]])
    for name, c in (("fold", comp), ("fold_mean", None)):
        with torch.no_grad():
            nll = fold_loss(tiny_qwen35.model, ids, FoldPattern(8, 6, 4), c, only_folded=False)
        assert r["ppl"][name] == pytest.approx(math.exp(float(nll)), rel=1e-3), name
    assert r["ppl"]["fold"] != r["ppl"]["fold_mean"]


def test_bench_fold_runs_an_ungated_model_without_sinks(capsys, tmp_path, tiny_llama_dir):
    """Sinks (an ungated model's default) would take rows of the window-only run: no run has any."""
    r, _ = _bench_fold(capsys, tmp_path, tiny_llama_dir, "--budget", "16")
    assert set(r["ppl"]) == {"full", "window", "fold"}
