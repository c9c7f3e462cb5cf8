"""The gated model (Qwen3.5 architecture, every layer full attention, the elementwise
head-specific sigmoid output gate) and its ungated twin (Qwen3: the same sizes, the same
recipe, no gate)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM
from transformers.models.qwen3_5 import Qwen3_5ForCausalLM, Qwen3_5TextConfig


@dataclass
class ModelSize:
    hidden_size: int = 256
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 64
    intermediate_size: int = 768
    max_position_embeddings: int = 1024
    tie_word_embeddings: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    # trains in a few minutes on CPU per thousand steps; what ships when no GPU is around
    "cpu": ModelSize(hidden_size=192, num_hidden_layers=6, num_attention_heads=3, num_key_value_heads=1,
                     head_dim=64, intermediate_size=512, max_position_embeddings=256),
    # the device recipe (docs/model.md): the largest that ships in bf16 under 40 MB with an 8192-token
    # vocabulary (18.9M parameters, 37.7 MB of bf16 weights), 2048 positions, ~10 minutes on an H100
    "gpu": ModelSize(hidden_size=384, num_hidden_layers=10, num_attention_heads=6, num_key_value_heads=2,
                     head_dim=64, intermediate_size=896, max_position_embeddings=2048),
    # tests
    "tiny": ModelSize(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                      head_dim=16, intermediate_size=64, max_position_embeddings=128),
}


def make_config(size: ModelSize, vocab_size: int, tokenizer=None, gated: bool = True):
    common = dict(size.to_dict(), vocab_size=vocab_size, initializer_range=0.02, rms_norm_eps=1e-6,
                  attention_dropout=0.0)
    if tokenizer is not None:
        common.update(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.bos_token_id)
    if gated:
        # all layers full attention: heedful's KV eviction applies to every layer
        return Qwen3_5TextConfig(layer_types=["full_attention"] * size.num_hidden_layers, **common)
    return Qwen3Config(**common)


def build_model(size: ModelSize, vocab_size: int, tokenizer=None, gated: bool = True, seed: int = 0):
    """A freshly initialised model; the same seed gives the same shared-shape init streams."""
    torch.manual_seed(seed)
    cfg = make_config(size, vocab_size, tokenizer, gated)
    if gated:
        model = Qwen3_5ForCausalLM(cfg)
    else:
        model = Qwen3ForCausalLM(cfg)
    return model


def count_params(model) -> int:
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n
