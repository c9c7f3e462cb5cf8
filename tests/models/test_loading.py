"""Model loading through the real path, and its one-line errors."""

from __future__ import annotations

import pytest

from heedful.models import loading
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
