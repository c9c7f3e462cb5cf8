"""Learn, picker and compressor: a picker folder that is wrong in any way is one line (NaN
weights or threshold, a tensor of the wrong shape, missing or unreadable files, another
model's); a compressor folder likewise. Each refused before anything is recorded."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.attack.harness import Case


@pytest.fixture(scope="session")
def picker_folder(tiny_qwen35, tmp_path_factory):
    import torch

    from heedful.learn.picker import Head, Picker, adapter_fingerprint, model_fingerprint, tokenizer_fingerprint

    torch.manual_seed(0)
    head = Head(128, "mlp", hidden=16, lookahead=0, rank=32)
    meta = {"format": 1, "model": "tiny", "model_fingerprint": model_fingerprint(tiny_qwen35.model),
            "tokenizer_fingerprint": tokenizer_fingerprint(tiny_qwen35.tokenizer),
            "adapter_fingerprint": adapter_fingerprint(tiny_qwen35.model), "layers": [0, 1], "window": 64,
            "stride": 32, "threshold": 0.5,
            "head": {"kind": "mlp", "d_in": 128, "hidden": 16, "lookahead": 0, "rank": 32}}
    out = tmp_path_factory.mktemp("attack-picker") / "pk"
    out.mkdir()
    Picker(head, meta).save(out)
    return out


@pytest.fixture
def pk_paths(paths, picker_folder):
    paths["picker"] = str(picker_folder)
    return paths


def _copy(tmp, paths):
    dst = f"{tmp}/pk"
    if not os.path.exists(dst):
        shutil.copytree(paths["picker"], dst)
    return dst


def _meta(**changes):
    def setup(tmp, paths):
        d = _copy(tmp, paths)
        meta = json.loads(open(f"{d}/picker.json").read())
        meta.update(changes)
        open(f"{d}/picker.json", "w").write(json.dumps(meta))  # NaN is written as NaN

    return setup


def _tensors(change):
    def setup(tmp, paths):
        from safetensors.torch import load_file, save_file

        d = _copy(tmp, paths)
        state = load_file(f"{d}/picker.safetensors")
        change(state)
        save_file(state, f"{d}/picker.safetensors")

    return setup


def _nan(state):
    k = next(k for k, v in state.items() if v.is_floating_point())
    state[k] = state[k].clone()
    state[k].view(-1)[0] = float("nan")


def _reshape(state):
    import torch

    k = next(k for k, v in state.items() if v.dim() == 2)
    state[k] = torch.zeros(state[k].shape[0] + 1, state[k].shape[1])


def _file(name, data=None):
    def setup(tmp, paths):
        d = _copy(tmp, paths)
        if data is None:
            os.unlink(f"{d}/{name}")
        else:
            open(f"{d}/{name}", "wb").write(data)

    return setup


def _truncate(tmp, paths):
    d = _copy(tmp, paths)
    os.truncate(f"{d}/picker.safetensors", 40)


GEN = ["generate", "The vault code is 4821.", "-n", "1", "--model", "{model}", "--db", "{db}", "--picker", "{tmp}/pk"]
CASES = [
    Case("picker-good", GEN, code=0, setup=_copy, unchanged=False),
    Case("picker-threshold-nan", GEN, shape=r"threshold nan is not a number", setup=_meta(threshold=float("nan"))),
    Case("picker-threshold-text", GEN, shape=r"threshold 'high'", setup=_meta(threshold="high")),
    Case("picker-threshold-five", GEN, shape=r"threshold 5", setup=_meta(threshold=5)),
    Case("picker-weights-nan", GEN, shape=r"NaN or infinite", setup=_tensors(_nan)),
    Case("picker-wrong-shape", GEN, shape=r"size mismatch", setup=_tensors(_reshape)),
    Case("picker-no-json", GEN, shape=r"no picker.json", setup=_file("picker.json")),
    Case("picker-json-garbage", GEN, shape=r"picker.json cannot be read", setup=_file("picker.json", b"{nope")),
    Case("picker-json-list", GEN, shape=r"lacks", setup=_file("picker.json", b"[1, 2]")),
    Case("picker-no-weights", GEN, shape=r"no picker.safetensors", setup=_file("picker.safetensors")),
    Case("picker-weights-truncated", GEN, shape=r"cannot be read", setup=_truncate),
    Case("picker-weights-pickle", GEN, shape=r"cannot be read",
         setup=_file("picker.safetensors", b"\x80\x04\x95 pickle bytes")),
    Case("picker-format-two", GEN, shape=r"picker format 2", setup=_meta(format=2)),
    Case("picker-other-model", [*GEN[:5], "{llama}", *GEN[6:]], shape=r"another model", setup=_copy),
    Case("picker-other-tokenizer", GEN, shape=r"another tokenizer", setup=_meta(tokenizer_fingerprint="0" * 16)),
    Case("picker-layer-past-model", GEN, shape=r"reads layer 9", setup=_meta(layers=[0, 9])),
    Case("picker-not-a-folder", [*GEN[:-1], "{db}"], shape=r"--picker"),
    Case("auto-pin-without-picker", [*GEN[:-2], "--auto-pin"], shape=r"--auto-pin"),
    Case("compressor-missing", [*GEN[:-2], "--fold-budget", "2", "--fold-block", "4", "--fold-compressor",
                                "{tmp}/none"], shape=r"--fold-compressor .*none"),
    Case("compressor-empty-folder", [*GEN[:-2], "--fold-budget", "2", "--fold-block", "4", "--fold-compressor",
                                     "{tmp}"], shape=r"not a compressor folder"),
    Case("train-compressor-text-fifo", ["train", "compressor", "--out", "{tmp}/c", "--model", "{model}", "--text",
                                        "{tmp}/fifo"], shape=r"--text .*fifo: is a FIFO",
         setup=lambda tmp, p: os.mkfifo(f"{tmp}/fifo")),
    Case("train-compressor-text-missing", ["train", "compressor", "--out", "{tmp}/c", "--model", "{model}", "--text",
                                           "{tmp}/none.txt", "--steps", "1"], shape=r"--text .*none.txt"),
    Case("train-compressor-out-is-file", ["train", "compressor", "--out", "{db}", "--model", "{model}"],
         shape=r"--out"),
    Case("learn-db-fifo", ["learn", "--db", "{tmp}/fifo", "--out", "{tmp}/o"], shape=r"is a FIFO",
         setup=lambda tmp, p: os.mkfifo(f"{tmp}/fifo")),
    Case("learn-db-missing", ["learn", "--db", "{tmp}/none.db", "--out", "{tmp}/o"], shape=r"no such database"),
    Case("learn-out-is-file", ["learn", "--db", "{db}", "--out", "{db}"], shape=r"--out .*expected a folder"),
    Case("learn-epochs-zero", ["learn", "--db", "{db}", "--out", "{tmp}/o", "--epochs", "0"], shape=r"--epochs"),
    Case("compressor-without-fold", [*GEN[:-2], "--fold-compressor", "{tmp}"], shape=r"only with --fold-budget"),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_a_bad_picker_or_compressor_is_one_line(cli, pk_paths, case):
    from pathlib import Path

    from tests.attack.harness import run_case

    run_case(case, cli, Path(pk_paths["tmp"]), pk_paths)
