"""Real architectures at their real attention shapes: each family's head counts, head size,
GQA ratio, rotary settings (Llama 3's frequency scaling, Qwen3.5's partial and sectioned
rotary), layer pattern and sliding window, as their published configs give them, with a
small hidden size, two to four layers and random weights (fast on CPU). heedful gives the
stock model's greedy tokens while nothing is evicted, and keeps its rows bounded when it
evicts. Gemma-2 and Gemma-3 are refused with their reason (the engine's contract does not
cover them yet: docs/scale.md)."""

from __future__ import annotations

import pytest
import torch

from heedful.errors import ModelLoadError
from heedful.models.loading import load_model
from heedful.selector.session import Session
from tests.tiny_models import build_tokenizer

PROMPT = "The vault code is 4821. Remember it. Alice met Bob at the station at noon."

# family -> (transformers config class path, the published config's attention settings)
FAMILIES = {
    "qwen3-0.6b": ("Qwen3Config", "Qwen3ForCausalLM", dict(
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, num_hidden_layers=2,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        max_position_embeddings=40960, rms_norm_eps=1e-6, tie_word_embeddings=True)),
    "llama-3.2-1b": ("LlamaConfig", "LlamaForCausalLM", dict(
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, num_hidden_layers=2,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500_000.0, "factor": 32.0, "high_freq_factor": 4.0,
                         "low_freq_factor": 1.0, "original_max_position_embeddings": 8192},
        max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True)),
    "mistral-7b-v0.1": ("MistralConfig", "MistralForCausalLM", dict(  # every layer reads its last 4096 positions
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, num_hidden_layers=2, sliding_window=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10_000.0}, max_position_embeddings=32768,
        rms_norm_eps=1e-5, tie_word_embeddings=False)),
    "qwen3.5-hybrid": ("Qwen3_5TextConfig", "Qwen3_5ForCausalLM", dict(  # Qwen3.5-27B's text layers, 3:1
        num_attention_heads=16, num_key_value_heads=4, head_dim=256, num_hidden_layers=4,
        layer_types=["linear_attention"] * 3 + ["full_attention"], linear_conv_kernel_dim=4, linear_key_head_dim=128,
        linear_value_head_dim=128, linear_num_key_heads=16, linear_num_value_heads=32,
        rope_parameters={"rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25,
                         "mrope_section": [11, 11, 10], "mrope_interleaved": True},
        max_position_embeddings=262144, rms_norm_eps=1e-6, tie_word_embeddings=False)),
}


def build(tmp_path, family: str):
    import transformers

    cfg_name, model_name, real = FAMILIES[family]
    tok = build_tokenizer(tmp_path)
    torch.manual_seed(0)
    cfg = getattr(transformers, cfg_name)(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                          initializer_range=0.2, bos_token_id=tok.bos_token_id,
                                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **real)
    getattr(transformers, model_name)(cfg).save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("family", list(FAMILIES))
def test_real_shapes_equal_stock_greedy_and_evict_within_the_budget(tmp_path, family):
    d = build(tmp_path, family)
    lm = load_model(str(d), dtype="float32", device="cpu")
    s = Session(lm.model, lm.tokenizer, window=64, budget=64, sinks=0)  # everything fits: nothing leaves
    s.prompt(PROMPT)
    n0 = len(s)
    ids = [t.id for t in s.generate(64 - n0, stop_at_eos=False)]
    assert s.stats().evicted == 0 and len(s) == 64
    stock = load_model(str(d), dtype="float32", device="cpu", attn_implementation="sdpa").model
    with torch.inference_mode():
        full = stock(input_ids=torch.tensor([s.token_ids])).logits[0]
    assert ids == [int(full[n0 - 1 + k].argmax()) for k in range(len(ids))]

    bounded = Session(lm.model, lm.tokenizer, window=8, budget=16)
    bounded.prompt(PROMPT, pin=["4821"])
    for _ in bounded.generate(40, stop_at_eos=False):
        assert bounded.stats().resident <= 16
    st = bounded.stats()
    assert st.peak_resident <= 16 and st.evicted > 0 and bounded.next_logits.isfinite().all()


@pytest.mark.parametrize("family", ["qwen3-0.6b", "llama-3.2-1b", "mistral-7b-v0.1"])
def test_real_shapes_evict_invisibly(tmp_path, family):
    """With pins, eviction, re-encoding and re-rotation at these head sizes and rotary
    frequencies (Llama 3's scaled ones too), the next-token logits are those of the
    reference engine that frees nothing (invariant 1)."""
    from heedful.selector.naive import ReferenceEngine

    lm = load_model(str(build(tmp_path, family)), dtype="float32", device="cpu")
    s = Session(lm.model, lm.tokenizer, window=8, budget=24, sinks=2, prefill_chunk=5)
    ref = ReferenceEngine(lm.model, lm.tokenizer, window=8, sinks=2, chunk=5)
    s.prompt(PROMPT)
    ref.prompt(PROMPT)
    (a, b), = s.pin("4821")  # long evicted: re-encoded in place
    ref.pin(a, b)
    assert torch.allclose(s.next_logits, ref.logits, atol=1e-4, rtol=1e-4)
    for tok in s.generate(30, stop_at_eos=False):
        ref.step(tok.id)
        diff = (s.next_logits - ref.logits).abs().max().item()
        assert diff < 1e-4 * max(1.0, ref.logits.abs().max().item()), f"step {tok.index}: max |diff| {diff}"
    assert s.stats().evicted > 0 and s.stats().peak_resident <= 24


@pytest.mark.parametrize("config,model_type,reason", [
    ("Gemma2Config", "gemma2", "soft-caps the scores"),
    ("Gemma3TextConfig", "gemma3_text", "two different rotary embeddings"),
])
def test_gemma_is_refused_in_one_line(tmp_path, cli, config, model_type, reason):
    """Gemma-2/3 (Gemma-3 1B's interleaved sliding and global layers) would silently differ."""
    import transformers

    getattr(transformers, config)(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=1, head_dim=256).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=reason):
        load_model(str(tmp_path))
    code, out, err = cli("generate", "x", "--model", tmp_path)
    assert code == 2 and f"architecture {model_type!r} is not supported" in err
    assert len(err.strip().splitlines()) == 1
