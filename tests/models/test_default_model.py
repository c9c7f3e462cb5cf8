"""The shipped gated model: found on the package path, loaded offline through heedful's
real loader, and it generates."""

from __future__ import annotations

import pytest

from heedful.models.loading import EMBEDDED_MODEL_DIR as DEFAULT_MODEL_DIR

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").is_file(),
                                reason="no default model in this build")


def test_shipped_files_and_size():
    names = {p.name for p in DEFAULT_MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    total = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir() if p.is_file())
    assert total <= 40 * 1024 * 1024


def test_loads_offline_by_default_and_generates(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from heedful.models.loading import default_model_dir, load_model
    from heedful.selector.session import Session

    assert default_model_dir() is not None and default_model_dir().resolve() == DEFAULT_MODEL_DIR.resolve()
    lm = load_model(None, dtype="float32", device="cpu")
    assert lm.name == "default" and lm.gated
    assert type(lm.model).__name__ == "Qwen3_5ForCausalLM"
    cfg = lm.model.config
    assert set(cfg.layer_types) == {"full_attention"}
    s = Session(lm.model, lm.tokenizer, gated=True)
    s.prompt("One day Mia went to the park with")
    toks = list(s.generate(12))
    assert len(toks) == 12
    text = s.text()
    assert text.startswith("One day Mia went to the park with") and len(text) > 40


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "fold_compressor" / "compressor.json").is_file(),
                    reason="no fold compressor in this build")
def test_the_shipped_fold_compressor_is_the_default_and_beats_the_mean():
    """--fold-budget on the embedded model pools with its own compressor, and on held-out text
    (another seed than training's) that compressor's fold loss is below mean pooling's and
    below the window alone at the same rows."""
    import torch

    from heedful.app.open import session_for
    from heedful.models.loading import load_model
    from heedful.selector.compressor import LearnedPool
    from heedful.train.compressor import FoldPattern, fold_loss, synthetic_text, token_rows

    lm = load_model(None, dtype="float32", device="cpu")
    s = session_for(lm, window=32, budget=64, fold_budget=32)
    assert isinstance(s.residency.autofold.compressor, LearnedPool)
    assert s.config.fold_compressor == str((DEFAULT_MODEL_DIR / "fold_compressor").resolve())
    rows = token_rows(lm.tokenizer, synthetic_text(777, 6000), 256)[:4]
    with torch.no_grad():
        learned = fold_loss(lm.model, rows, FoldPattern(32, 32, 16), s.residency.autofold.compressor, only_folded=False)
        mean = fold_loss(lm.model, rows, FoldPattern(32, 32, 16), None, only_folded=False)
        window = fold_loss(lm.model, rows, FoldPattern(64, 0, 16), None, only_folded=False)
    assert learned < mean and learned < window, (float(learned), float(mean), float(window))
