"""Builds tiny models with real configs (Qwen3.5 gated, Llama ungated) and a tiny BPE
tokenizer, saved as a Hugging Face folder (safetensors) that heedful loads like any other."""

from __future__ import annotations

from pathlib import Path

import torch

CORPUS = (
    "The vault code is 4821. Remember it. Alice met Bob at the station at noon. "
    "The quick brown fox jumps over the lazy dog. A filler sentence follows another filler sentence. "
    "Numbers: 0 1 2 3 4 5 6 7 8 9. The capital of France is Paris. What is the vault code? "
    "Gated attention multiplies the output by a sigmoid gate, so there is no attention sink. "
) * 4


# ChatML, as SmolLM2's and Qwen's templates write it (a default system turn included)
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
          "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def build_tokenizer(out: Path, vocab_size: int = 300, chat: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|bos|>"] + (["<|im_start|>", "<|im_end|>"] if chat else [])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>",
                                   **({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]} if chat else {}))
    if chat:
        fast.chat_template = CHATML
    fast.save_pretrained(out)
    return fast


def build_tiny_model(out: Path, kind: str, max_positions: int = 512, layers: int = 2, seed: int = 0,
                     chat: bool = False, **overrides) -> Path:
    """chat: the tokenizer has ChatML's special tokens and chat template (CHATML)."""
    out = Path(out)
    tok = build_tokenizer(out, chat=chat)
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=max_positions,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  initializer_range=0.2, tie_word_embeddings=False)
    common.update(overrides)
    if kind == "qwen3_5":
        from transformers.models.qwen3_5 import Qwen3_5ForCausalLM, Qwen3_5TextConfig

        cfg = Qwen3_5TextConfig(layer_types=["full_attention"] * layers, **common)
        model = Qwen3_5ForCausalLM(cfg)
    elif kind == "qwen3_5_hybrid":
        from transformers.models.qwen3_5 import Qwen3_5ForCausalLM, Qwen3_5TextConfig

        cfg = Qwen3_5TextConfig(layer_types=["linear_attention", "full_attention"] * (layers // 2), **common)
        model = Qwen3_5ForCausalLM(cfg)
    elif kind == "mistral_sliding":  # every layer reads only the last 16 positions
        from transformers import MistralConfig, MistralForCausalLM

        model = MistralForCausalLM(MistralConfig(sliding_window=16, **common))
    elif kind == "qwen3":  # ungated, q/k norms; transformers has a tensor-parallel plan for it
        from transformers import Qwen3Config, Qwen3ForCausalLM

        model = Qwen3ForCausalLM(Qwen3Config(**common))
    elif kind == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        raise ValueError(kind)
    model.save_pretrained(out, safe_serialization=True)
    return out


def moved_compressor(sizes: dict, block: int, seed: int = 0, scale: float = 0.2):
    """A LearnedPool (heedful.selector.compressor) with every parameter moved away from its
    start, the mean, so a test that needs the learned path cannot pass on the mean."""
    from heedful.selector.compressor import LearnedPool

    c = LearnedPool(**sizes, block=block)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in c.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return c.requires_grad_(False)
