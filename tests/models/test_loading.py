"""Model loading errors and the `heedful generate` contract (stdout, --json, exit codes)."""

from __future__ import annotations

import json

import pytest

from heedful.models import loading
from heedful.cli import main
from heedful.errors import ModelLoadError
from heedful.models.loading import load_model


def test_loads_gated_and_ungated_through_the_real_path(tiny_qwen35, tiny_llama):
    assert tiny_qwen35.gated and not tiny_llama.gated
    assert tiny_qwen35.model.config._attn_implementation == "heedful"


def test_missing_path(tmp_path):
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_model(str(tmp_path / "nope"))


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_unsupported_architecture(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="unsupported architecture 'gpt2'"):
        load_model(str(tmp_path))


def test_hub_id_while_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="offline"):
        load_model("heedful-test/not-a-real-model")


def test_no_default_model_says_so(monkeypatch):
    monkeypatch.setattr(loading, "default_model_dir", lambda: None)
    with pytest.raises(ModelLoadError, match="no default model is installed yet"):
        load_model(None)


def _run(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_generate_json_stream(capsys, tiny_qwen35_dir):
    code, out, err = _run(capsys, "generate", "The vault code is 4821. Remember it.", "--model", str(tiny_qwen35_dir),
                          "-n", "30", "--window", "8", "--budget", "16", "--pin", "4821", "--pin", "/Rem\\w+/",
                          "--json", "--ignore-eos", "--dtype", "float32")
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    toks, summary = lines[:-1], lines[-1]
    assert len(toks) == 30
    assert all(set(t) == {"index", "id", "text", "retained"} for t in toks)
    assert [t["index"] for t in toks] == list(range(toks[0]["index"], toks[0]["index"] + 30))
    assert summary["event"] == "summary" and summary["tokens"] == toks[-1]["index"] + 1
    assert summary["peak_resident"] <= 16 and summary["resident"] <= 16 and summary["evicted"] > 0
    assert summary["tokens_per_s"] > 0


def test_generate_plain_text(capsys, tiny_llama_dir):
    code, out, err = _run(capsys, "generate", "Alice met Bob", "--model", str(tiny_llama_dir), "-n", "5",
                          "--ignore-eos", "--window", "8", "--budget", "16")
    assert code == 0, err
    assert out.endswith("\n") and "tok/s" in err


@pytest.mark.parametrize("args,match", [
    (["--pin", "not in the prompt"], "not found"),
    (["--pin", "/[unclosed/"], "bad regex"),
    (["--window", "32", "--budget", "16"], "smaller than window"),
    (["--model", "/definitely/not/here"], "no such directory"),
])
def test_generate_bad_input_exits_2_with_one_line(capsys, tiny_qwen35_dir, args, match):
    argv = ["generate", "The vault code is 4821.", "-n", "3"]
    if "--model" not in args:
        argv += ["--model", str(tiny_qwen35_dir)]
    code, out, err = _run(capsys, *argv, *args)
    assert code == 2
    assert match in err and len(err.strip().splitlines()) == 1


def test_help_on_every_command(capsys):
    from heedful.cli import cli

    names = cli.list_commands(None)
    assert {"generate", "bench"} <= set(names)
    for name in names:
        code, out, err = _run(capsys, name, "--help")
        assert code == 0 and "Usage" in out, name
    bench = cli.get_command(None, "bench")
    for name in bench.list_commands(None):
        code, out, err = _run(capsys, "bench", name, "--help")
        assert code == 0 and "Usage" in out, name
