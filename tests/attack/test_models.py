"""Models and files: a model folder's own code never runs without --trust-remote-code (train
evaluate included: the same loader as every command); configs, weights and corpora that
are wrong are one line, exit 2."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.attack.harness import Case


def _folder(tmp, paths, name="m"):
    dst = f"{tmp}/{name}"
    shutil.copytree(paths["model"], dst)
    return dst


def _config(**changes):
    def setup(tmp, paths):
        dst = _folder(tmp, paths)
        cfg = json.loads(open(f"{dst}/config.json").read())
        cfg.update(changes)
        open(f"{dst}/config.json", "w").write(json.dumps(cfg))

    return setup


EVIL = "open({marker!r}, 'w').write('ran')\nfrom transformers import PretrainedConfig\n" \
       "class Evil(PretrainedConfig):\n    model_type = 'evil'\n"


def _remote_code(tmp, paths):
    dst = _folder(tmp, paths)
    cfg = json.loads(open(f"{dst}/config.json").read())
    cfg["auto_map"] = {"AutoConfig": "evil.Evil", "AutoModelForCausalLM": "evil.Evil"}
    cfg["model_type"] = "evil"
    open(f"{dst}/config.json", "w").write(json.dumps(cfg))
    open(f"{dst}/evil.py", "w").write(EVIL.format(marker=f"{tmp}/RAN"))
    _corpus(tmp, paths)


def _corpus(tmp, paths):
    import os

    os.makedirs(f"{tmp}/corpus", exist_ok=True)
    open(f"{tmp}/corpus/valid.txt", "w").write("The vault code is 4821. " * 200)
    open(f"{tmp}/corpus/recall_valid.jsonl", "w").write(
        json.dumps({"prompt": "The vault code is 4821. Question: the code?\nAnswer:", "answer": "4821"}) + "\n")


def _weights(kind):
    def setup(tmp, paths):
        import os

        dst = _folder(tmp, paths)
        _corpus(tmp, paths)
        w = f"{dst}/model.safetensors"
        if kind == "truncated":
            os.truncate(w, os.path.getsize(w) // 2)
        elif kind == "pickle-only":
            os.unlink(w)
            open(f"{dst}/pytorch_model.bin", "wb").write(b"\x80\x04not really a pickle")
        elif kind == "missing-tensor":
            from safetensors.torch import load_file, save_file

            tensors = load_file(w)
            tensors.pop(next(k for k in tensors if "mlp" in k))
            save_file(tensors, w, metadata={"format": "pt"})

    return setup


def _no_marker(tmp, paths, out, err):
    import os

    assert not os.path.exists(f"{tmp}/RAN"), "the folder's code ran"


GEN = ["generate", "hello", "-n", "1", "--model", "{tmp}/m"]
EVAL = ["train", "evaluate", "{tmp}/m", "--corpus", "{tmp}/corpus", "--rows", "1", "--episodes", "1",
        "--bpc-chars", "10", "--seq-len", "16"]
CASES = [
    Case("generate-remote-code", GEN, shape=r"--trust-remote-code", setup=_remote_code, check=_no_marker,
         unchanged=False),
    Case("evaluate-remote-code", EVAL, shape=r"--trust-remote-code", setup=_remote_code, check=_no_marker,
         unchanged=False),
    Case("evaluate-missing-corpus", ["train", "evaluate", "{model}", "--corpus", "{tmp}/nowhere"],
         shape=r"--corpus .*nowhere: no such folder"),
    Case("evaluate-corpus-without-valid", ["train", "evaluate", "{model}", "--corpus", "{tmp}"],
         shape=r"no valid.txt"),
    Case("evaluate-truncated-weights", EVAL, shape=r"cannot be read", setup=_weights("truncated"), unchanged=False),
    Case("evaluate-pickle-only-weights", EVAL, shape=r"no safetensors weights", setup=_weights("pickle-only"),
         unchanged=False),
    Case("generate-truncated-weights", GEN, shape=r"cannot be read", setup=_weights("truncated"), unchanged=False),
    Case("generate-pickle-only-weights", GEN, shape=r"no safetensors weights", setup=_weights("pickle-only"),
         unchanged=False),
    Case("generate-missing-weight-tensor", GEN, shape=r"its weights miss 1 tensor", setup=_weights("missing-tensor"),
         unchanged=False),
    Case("generate-kv-heads-zero", GEN, shape=r"num_key_value_heads is 0", setup=_config(num_key_value_heads=0),
         unchanged=False),
    Case("generate-kv-heads-negative", GEN, shape=r"num_key_value_heads", setup=_config(num_key_value_heads=-2),
         unchanged=False),
    Case("generate-heads-not-multiple", GEN, shape=r"not a multiple", setup=_config(num_key_value_heads=3),
         unchanged=False),
    Case("generate-hidden-size-text", GEN, shape=r"hidden_size", setup=_config(hidden_size="big"),
         unchanged=False),
    Case("generate-layers-zero", GEN, shape=r"num_hidden_layers", setup=_config(num_hidden_layers=0),
         unchanged=False),
    Case("generate-no-such-model-folder", ["generate", "hi", "--model", "{tmp}/none/"], shape=r"--model"),
    Case("generate-model-is-a-file", ["generate", "hi", "--model", "{db}"], shape=r"--model"),
    Case("gguf-missing", ["generate", "hi", "--model", "{tmp}/none.gguf"], shape=r"none\.gguf: no such file"),
    Case("gguf-garbage", ["generate", "hi", "--model", "{tmp}/g.gguf"], shape=r"not a GGUF file",
         setup=lambda tmp, p: open(f"{tmp}/g.gguf", "wb").write(b"PK\x03\x04 not gguf" * 10)),
    Case("gguf-empty", ["generate", "hi", "--model", "{tmp}/g.gguf"], shape=r"not a GGUF file",
         setup=lambda tmp, p: open(f"{tmp}/g.gguf", "wb").close()),
    Case("gguf-fifo", ["generate", "hi", "--model", "{tmp}/g.gguf"], shape=r"not a regular file",
         setup=lambda tmp, p: __import__("os").mkfifo(f"{tmp}/g.gguf")),
    Case("gguf-magic-then-garbage", ["generate", "hi", "--model", "{tmp}/g.gguf"], shape=r"g\.gguf",
         setup=lambda tmp, p: open(f"{tmp}/g.gguf", "wb").write(b"GGUF" + b"\xff" * 64), unchanged=False,
         marks=[pytest.mark.slow]),
    Case("generate-config-not-json", GEN, shape=r"config", unchanged=False,
         setup=lambda tmp, p: open(f"{_folder(tmp, p)}/config.json", "w").write("{not json")),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_a_bad_model_or_corpus_is_one_line(attack, case):
    attack(case)
