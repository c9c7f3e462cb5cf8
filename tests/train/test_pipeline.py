"""The training pipeline end to end on a tiny corpus and a tiny model (seconds on CPU)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from heedful.train.corpus import build_corpus, is_permissive, read_docs, read_episodes
from heedful.train.synthetic import recall_episode
from heedful.train.loop import TrainConfig, train
from heedful.train.models import PRESETS, build_model, count_params

PROSE = ("The library reads each file in order and keeps the paragraphs that look like English prose, "
         "so that the model sees sentences rather than code.")


def fake_site_packages(root):
    sp = root / "site-packages"
    for name, licence, doc in [("goodpkg", "MIT", PROSE), ("badpkg", "GPL-3.0-only", "Secret text that must not "
                                "appear in the corpus because the licence of this package is not permissive.")]:
        info = sp / f"{name}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
                                       f"License-Expression: {licence}\n\n{doc}\n\n{doc}\n")
        (sp / name).mkdir()
        (sp / name / "__init__.py").write_text(
            f'"""{doc}\n\nA second paragraph of the docstring explains what the module does for its users."""\n'
            "def f():\n    '''>>> f()  # code, not prose'''\n")
        (info / "RECORD").write_text(f"{name}/__init__.py,,\n")
    return sp


def fake_doc_root(root):
    d = root / "doc" / "somepkg"
    d.mkdir(parents=True)
    (d / "copyright").write_text("Format: x\n\nFiles: *\nLicense: BSD-3-Clause\n")
    (d / "README").write_text("This package provides a small tool that prints the current date and time "
                              "in a friendly format for people who read it.\n\n    code block ignored\n")
    return root / "doc"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus_src")
    out = root / "corpus"
    m = build_corpus(out, seed=0, site_packages=fake_site_packages(root), doc_root=fake_doc_root(root),
                     licences_root=None, n_stories=300, n_recall=300, log=lambda *_: None)
    return out, m


def test_corpus_sources_licences_dedup(corpus):
    out, m = corpus
    names = {s["name"]: s for s in m["sources"]}
    assert names["goodpkg"]["licence"] == "MIT" and names["goodpkg"]["kind"] == "pypi"
    assert "badpkg" not in names
    assert names["somepkg"]["licence"] == "BSD-3-Clause" and names["somepkg"]["kind"] == "debian"
    assert {"generated", "recall"} <= {s["kind"] for s in m["sources"]}
    text = (out / "train.txt").read_text() + (out / "valid.txt").read_text()
    assert "Secret text" not in text and ">>>" not in text and "code block ignored" not in text
    assert text.count(PROSE) == 1  # README and docstring said it three times: deduplicated
    assert json.loads((out / "manifest.json").read_text()) == m
    # deterministic
    root2 = out.parent / "again"
    m2 = build_corpus(root2, seed=0, site_packages=out.parent / "site-packages", doc_root=out.parent / "doc",
                      licences_root=None, n_stories=300, n_recall=300, log=lambda *_: None)
    assert m2 == m and (root2 / "train.txt").read_text() == (out / "train.txt").read_text()


def test_copy_drills(corpus):
    out, m = corpus
    drills = read_episodes(out / "copy_train.jsonl")
    assert len(drills) == 300 and m["copy_drills"] == 300
    head, again = drills[0]["text"].split("\nRepeat: ")
    assert head.split(": ", 1)[1] == again


def test_recall_episode_shape():
    ep = recall_episode(random.Random(3))
    assert ep.prompt.startswith("Facts: ") and ep.prompt.endswith("\nAnswer:")
    assert ep.answer in " ".join(ep.facts) and ep.text == ep.prompt + " " + ep.answer + "."
    assert is_permissive("BSD-3-Clause AND MIT") and not is_permissive("GPL-2.0-or-later")


def _cfg(corpus_dir, out_dir, steps, **kw):
    return TrainConfig(corpus_dir=str(corpus_dir), out_dir=str(out_dir), size=PRESETS["tiny"], vocab_size=400,
                       seq_len=32, batch_size=4, steps=steps, eval_every=3, ckpt_every=3, eval_rows=4,
                       eval_episodes=4, warmup=2, **kw)


def test_train_end_to_end_resume_and_load(corpus, tmp_path):
    out_dir, _ = corpus
    full = train(_cfg(out_dir, tmp_path / "full", 6), log=lambda *_: None, progress=False)
    assert full["steps"] == 6 and full["tokens"] == 6 * 4 * 32 and full["gated"]
    assert (tmp_path / "full" / "model.safetensors").is_file() and (tmp_path / "full" / "tokenizer.json").is_file()
    metrics = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "valid_loss" in m] == [3, 6]
    # an interrupted run resumed from its checkpoint ends with the same weights
    part = _cfg(out_dir, tmp_path / "resumed", 6, tokenizer_dir=str(tmp_path / "full"))
    part.steps = 3
    train(part, log=lambda *_: None, progress=False)
    part.steps = 6
    resumed = train(part, resume=True, log=lambda *_: None, progress=False)
    assert resumed["steps"] == 6
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    # loads through heedful's real path and generates
    from heedful.models.loading import load_model

    lm = load_model(str(tmp_path / "full"), dtype="float32", device="cpu")
    assert lm.gated and type(lm.model).__name__ == "Qwen3_5ForCausalLM"
    from heedful.selector.session import Session

    s = Session(lm.model, lm.tokenizer, gated=True)
    s.prompt("Facts: The code is 1234.")
    toks = list(s.generate(5))
    assert len(toks) == 5


def test_ungated_twin_same_size_same_data(corpus, tmp_path):
    out_dir, _ = corpus
    g = build_model(PRESETS["tiny"], 400, gated=True)
    u = build_model(PRESETS["tiny"], 400, gated=False)
    assert type(u).__name__ == "Qwen3ForCausalLM"
    q = g.model.layers[0].self_attn.q_proj
    assert q.out_features == 2 * g.config.num_attention_heads * g.config.head_dim  # query + gate
    assert u.model.layers[0].self_attn.q_proj.out_features == u.config.num_attention_heads * u.config.head_dim
    # same sizes apart from the gate rows of q_proj
    gate_rows = g.config.num_hidden_layers * q.in_features * q.out_features // 2
    assert count_params(g) - count_params(u) == gate_rows
    info = train(_cfg(out_dir, tmp_path / "ungated", 3, gated=False, copy_fraction=0.5), log=lambda *_: None,
                 progress=False)
    assert info["architecture"] == "Qwen3ForCausalLM" and not info["gated"]


def test_train_cli(corpus, tmp_path):
    from click.testing import CliRunner

    from heedful.cli.train import train as train_cmd

    out_dir, _ = corpus
    r = CliRunner().invoke(train_cmd, ["--corpus", str(out_dir), "--out", str(tmp_path / "m"), "--preset", "tiny",
                                       "--vocab", "400", "--seq-len", "32", "--batch", "2", "--steps", "2",
                                       "--eval-every", "2", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m" / "training.json").read_text())["steps"] == 2


def test_read_helpers(corpus):
    out, m = corpus
    assert len(read_docs(out / "train.txt")) == m["documents"]["train"]
    assert len(read_episodes(out / "recall_train.jsonl")) == 300


def test_second_stage_init_from(corpus, tmp_path):
    out_dir, _ = corpus
    train(_cfg(out_dir, tmp_path / "s1", 2), log=lambda *_: None, progress=False)
    info = train(_cfg(out_dir, tmp_path / "s2", 2, tokenizer_dir=str(tmp_path / "s1"), init_from=str(tmp_path / "s1"),
                      recall_fraction=0.9), log=lambda *_: None, progress=False)
    assert info["config"]["init_from"] == str(tmp_path / "s1")
    with pytest.raises(ValueError, match="do not match"):
        train(_cfg(out_dir, tmp_path / "bad", 1, tokenizer_dir=str(tmp_path / "s1"), init_from=str(tmp_path / "s1"),
                   gated=False), log=lambda *_: None, progress=False)
