"""--device-map (accelerate): layers placed by accelerate run the same session as a plain load.
On this CPU-only machine the offload that can be exercised is to disk: CPU memory is capped
below the model's size, so accelerate keeps the layers in an offload folder and loads each
one's weights while it runs (the same hooks move CPU-offloaded layers to a GPU)."""

from __future__ import annotations

import json

import pytest

from heedful.errors import ModelLoadError
from heedful.models.loading import load_model
from heedful.selector.session import Session

PROMPT = "The vault code is 4821. Remember it. Alice met Bob at the station at noon."


def _greedy(lm) -> list[int]:
    s = Session(lm.model, lm.tokenizer, window=8, budget=24, sinks=0)
    s.prompt(PROMPT, pin=["4821"])
    ids = [t.id for t in s.generate(30, stop_at_eos=False)]
    assert s.stats().evicted > 0
    return ids


def _cap(lm) -> str:
    """CPU memory for the embeddings and one layer: the other layers go to disk."""
    m = lm.model
    size = lambda mod: sum(p.numel() * p.element_size() for p in mod.parameters())  # noqa: E731
    return f"cpu={(size(m.model.embed_tokens) + size(m.model.layers[0])) // 1024 + 64}KB"


def test_disk_offload_gives_the_same_tokens(tiny_llama_dir, tiny_llama, tmp_path, cli):
    plain = _greedy(tiny_llama)
    cap = _cap(tiny_llama)
    lm = load_model(str(tiny_llama_dir), dtype="float32", device="cpu", device_map="auto", max_memory=cap,
                    offload_folder=str(tmp_path / "offload"))
    placed = set(lm.model.hf_device_map.values())
    assert "disk" in placed and "cpu" in placed, lm.model.hf_device_map
    assert any(p.device.type == "meta" for p in lm.model.parameters())  # weights really elsewhere
    assert _greedy(lm) == plain
    code, out, err = cli("generate", PROMPT, "--model", tiny_llama_dir, "--pin", "4821", "-n", "30", "--window", "8",
                         "--budget", "24", "--sinks", "0", "--ignore-eos", "--json", "--device-map", "auto",
                         "--max-memory", cap, "--offload-folder", tmp_path / "offload2")
    assert code == 0, err
    assert [json.loads(x)["id"] for x in out.splitlines()[:-1]] == plain


def test_device_map_auto_without_a_gpu_is_a_plain_cpu_load(tiny_llama_dir, tiny_llama):
    lm = load_model(str(tiny_llama_dir), dtype="float32", device_map="auto")
    assert _greedy(lm) == _greedy(tiny_llama)


@pytest.mark.parametrize("kwargs,match", [
    ({"max_memory": "cpu=1GiB"}, "--max-memory: only with --device-map"),
    ({"offload_folder": "x"}, "--offload-folder: only with --device-map"),
    ({"device_map": "auto", "max_memory": "0=1GiB,1=1GiB"}, "names 2 GPUs"),
    ({"device_map": "auto", "max_memory": "cpu:1GiB"}, "expected DEVICE=SIZE pairs"),
    ({"device_map": "auto", "max_memory": "tpu=1GiB"}, "'tpu' is not a device"),
    ({"device_map": "auto", "max_memory": "cpu=1GiB,disk=9GiB"}, "disk offload needs --offload-folder"),
    ({"device_map": "auto", "max_memory": "cpu=1KB"}, "the embeddings were offloaded"),
    ({"device_map": "auto", "adapter": "x"}, "--adapter x: not with --device-map"),
])
def test_bad_placement_is_one_line(tiny_llama_dir, tmp_path, kwargs, match):
    if kwargs.get("max_memory") == "cpu=1KB":
        kwargs = {**kwargs, "offload_folder": str(tmp_path / "off")}
    with pytest.raises(ModelLoadError, match=match) as e:
        load_model(str(tiny_llama_dir), dtype="float32", **kwargs)
    assert "\n" not in str(e.value)


def test_device_map_needs_accelerate(tiny_llama_dir, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "accelerate", None)  # import accelerate -> ImportError
    with pytest.raises(ModelLoadError, match=r"needs the accelerate package \(pip install 'heedful\[scale\]'\)"):
        load_model(str(tiny_llama_dir), device_map="auto")
