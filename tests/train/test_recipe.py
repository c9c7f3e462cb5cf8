"""The device recipe at tiny scale on CPU: the gpu preset's size, bf16 autocast, --minutes,
bits per character (the metric and its use in training and evaluation), bf16 shipping."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from heedful.train.corpus import build_corpus
from heedful.train.loop import TrainConfig, bits_per_char, train
from heedful.train.models import PRESETS, build_model, count_params
from heedful.train.ship import LIMIT, ship
from tests.train.test_debian import make_docs


def test_gpu_preset_ships_in_bf16_under_the_limit():
    size = PRESETS["gpu"]
    assert size.max_position_embeddings >= 2048
    with torch.device("meta"):
        gated = build_model(size, 8192, gated=True)
        ungated = build_model(size, 8192, gated=False)
    n = count_params(gated)
    # bf16 weights plus 1 MiB for the tokenizer and configs, in decimal megabytes too
    assert 2 * n + 2**20 <= min(LIMIT, 40_000_000), n
    assert n > 15e6  # and not needlessly small: more than four times the shipped CPU model
    assert count_params(ungated) < n


class Uniform(torch.nn.Module):
    """Logits all zero: every token costs ln(V) nats. Records the windows it was given."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.calls = vocab, []

    def forward(self, input_ids):
        self.calls.append(tuple(input_ids.shape))
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


class CharTokenizer:
    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [1 + (ord(c) % 50) for c in text]}


def test_bits_per_char_counts_every_text_token_once():
    docs = ["abcdefghij" * 7, "x" * 33, "hello world", "never read: past max_chars"]
    model = Uniform(64)
    r = bits_per_char(model, CharTokenizer(), docs, seq_len=16, device="cpu", max_chars=100, batch=3)
    assert r["chars"] == 70 + 33 and r["documents"] == 2 and r["tokens"] == 103
    # one token per character: bpc = log2(V) exactly; EOS between documents is not counted
    assert r["bits_per_char"] == pytest.approx(math.log2(64))
    # 103 text tokens + 2 EOS after the leading EOS = 105 targets: 6 full windows of 16 (batches of
    # 3), then one of 9
    assert model.calls == [(3, 16), (3, 16), (1, 9)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    doc, info, man, dpkg = make_docs(root / "src")
    out = root / "corpus"
    build_corpus(out, site_packages=False, doc_root=doc, licences_root=None, info_root=info, man_root=man,
                 dpkg_info=dpkg, dpkg_status=None, n_stories=300, n_recall=300, valid_fraction=0.3,
                 log=lambda *_: None)
    return out


def test_tiny_recipe_bf16_minutes_bpc(corpus, tmp_path, monkeypatch):
    import heedful.train.loop as loop

    seen = []
    real = loop._lm_loss

    def spy(model, rows):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return real(model, rows)

    monkeypatch.setattr(loop, "_lm_loss", spy)
    cfg = TrainConfig(corpus_dir=str(corpus), out_dir=str(tmp_path / "m"), size=PRESETS["tiny"], vocab_size=400,
                      seq_len=32, batch_size=16, steps=10_000, warmup=40, eval_every=10_000, ckpt_every=10_000,
                      eval_rows=4, eval_episodes=4, dtype="bfloat16", max_minutes=0.04, bpc_chars=2000,
                      copy_fraction=0.5)
    info = train(cfg, log=lambda *_: None, progress=False)
    assert seen and all(seen)  # every training forward ran under bf16 autocast
    # --minutes chose the number of steps (2.4 s of a tiny model: far fewer than 10,000)
    assert 25 < info["steps"] < 10_000 and info["config"]["steps"] == info["steps"]
    assert json.loads((tmp_path / "m" / "train_config.json").read_text())["steps"] == info["steps"]
    assert info["tokens"] == info["steps"] * 16 * 32
    ev = info["final_eval"]
    assert math.isfinite(ev["valid_loss"]) and 0 < ev["valid_prose_bpc"] < 12
    assert load_file(str(tmp_path / "m" / "model.safetensors"))["model.embed_tokens.weight"].dtype == torch.float32


def test_ship_bf16_and_load(corpus, tmp_path):
    cfg = TrainConfig(corpus_dir=str(corpus), out_dir=str(tmp_path / "m"), size=PRESETS["tiny"], vocab_size=400,
                      seq_len=32, batch_size=4, steps=2, warmup=1, eval_rows=2, eval_episodes=2, bpc_chars=0)
    train(cfg, log=lambda *_: None, progress=False)
    fp32 = (tmp_path / "m" / "model.safetensors").stat().st_size
    dest = tmp_path / "shipped"
    (dest / "fold_compressor").mkdir(parents=True)  # trained against weights that are going
    (dest / "fold_compressor" / "compressor.json").write_text("{}")
    ship(tmp_path / "m", dest, bf16=True)
    assert not (dest / "fold_compressor").exists()
    sd = load_file(str(dest / "model.safetensors"))
    assert {v.dtype for v in sd.values()} == {torch.bfloat16}
    assert (dest / "model.safetensors").stat().st_size < 0.55 * fp32
    assert json.loads((dest / "config.json").read_text())["dtype"] == "bfloat16"
    from heedful.models.loading import load_model

    a = load_model(str(tmp_path / "m"), device="cpu")
    b = load_model(str(dest), device="cpu")  # CPU: float32, cast from the bf16 file
    assert next(b.model.parameters()).dtype == torch.float32 and b.gated
    ids = torch.tensor([[5, 17, 33, 2, 9, 80]])
    with torch.no_grad():
        la, lb = a.model(input_ids=ids).logits, b.model(input_ids=ids).logits
    assert (la - lb).abs().max() < 0.05 and not torch.equal(la, lb)


def test_evaluate_reports_bits_per_char(corpus, tmp_path):
    from click.testing import CliRunner

    from heedful.cli.train import train as train_cmd

    train(TrainConfig(corpus_dir=str(corpus), out_dir=str(tmp_path / "m"), size=PRESETS["tiny"], vocab_size=400,
                      seq_len=32, batch_size=4, steps=2, warmup=1, eval_rows=2, eval_episodes=2, bpc_chars=0),
          log=lambda *_: None, progress=False)
    from heedful.train.evaluate import evaluate

    res = evaluate(str(tmp_path / "m"), str(corpus), rows=2, seq_len=32, episodes=2, samples=False, bpc_chars=3000)
    assert res["bpc_text"].startswith("valid_prose.txt:") and 0 < res["bits_per_char"] < 12
    r = CliRunner().invoke(train_cmd, ["evaluate", str(tmp_path / "m"), "--corpus", str(corpus), "--rows", "2",
                                       "--episodes", "1", "--seq-len", "32", "--bpc-chars", "500", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["seq_len"] == 32 and "bits_per_char" in out


def test_tokenizer_trained_beforehand_is_the_one_used(corpus, tmp_path):
    from heedful.train.tokenizer import main

    main([str(corpus), str(tmp_path / "tok"), "--vocab", "320"])
    made = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    assert len(made["model"]["vocab"]) + len(made["added_tokens"]) >= 300
    train(TrainConfig(corpus_dir=str(corpus), out_dir=str(tmp_path / "m"), tokenizer_dir=str(tmp_path / "tok"),
                      size=PRESETS["tiny"], vocab_size=999, seq_len=32, batch_size=2, steps=1, warmup=1,
                      eval_rows=2, eval_episodes=1, bpc_chars=0), log=lambda *_: None, progress=False)
    assert json.loads((tmp_path / "m" / "tokenizer.json").read_text())["model"] == made["model"]


def test_recipe_options_through_the_cli(corpus, tmp_path):
    from click.testing import CliRunner

    from heedful.cli.train import train as train_cmd

    r = CliRunner().invoke(train_cmd, [
        "--corpus", str(corpus), "--out", str(tmp_path / "m"), "--preset", "tiny", "--vocab", "400", "--seq-len",
        "32", "--batch", "8", "--steps", "100000", "--lr", "2e-3", "--warmup", "30", "--recall-fraction", "0.25",
        "--copy-fraction", "0.3", "--bf16", "--minutes", "0.03", "--eval-every", "500", "--ckpt-every", "500",
        "--no-progress"])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "m" / "training.json").read_text())
    assert info["config"]["dtype"] == "bfloat16" and info["config"]["max_minutes"] == 0.03
    assert 25 < info["steps"] < 100_000 and "valid_prose_bpc" in info["final_eval"]
