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


def test_sliding_window_models_keep_the_budget_inside_the_window(tmp_path):
    """A Mistral-style model whose layers read only their last 16 positions: a budget past
    that is refused (it would silently differ from the model); within it, heedful gives the
    stock model's greedy tokens while nothing is evicted."""
    import torch

    from heedful.errors import BudgetError
    from heedful.selector.session import Session
    from tests.tiny_models import build_tiny_model

    d = build_tiny_model(tmp_path, "mistral_sliding")
    lm = load_model(str(d), dtype="float32", device="cpu")
    with pytest.raises(BudgetError, match="sliding window"):
        Session(lm.model, lm.tokenizer, window=8, budget=32, gated=False)
    s = Session(lm.model, lm.tokenizer, window=16, budget=16, sinks=0, gated=False)
    with pytest.raises(BudgetError, match="sliding window"):
        s.set(budget=17)
    s.prompt("Alice met Bob")
    ids = [t.id for t in s.generate(16 - len(s))]
    assert s.stats().evicted == 0
    stock = load_model(str(d), dtype="float32", device="cpu", attn_implementation="sdpa").model
    with torch.inference_mode():
        full = stock(input_ids=torch.tensor([s.token_ids])).logits[0]
    n0 = len(s) - len(ids)
    assert ids == [int(full[n0 - 1 + k].argmax()) for k in range(len(ids))]
