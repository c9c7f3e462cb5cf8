"""Models with random weights for the latency benchmarks: the default architecture at a small
size (`--synthetic`), or a real architecture at its real size (`--preset`), so engine overhead
is measured at realistic shapes without downloading weights. Latency does not depend on what
the weights say; these models are never used to generate text for a person."""

from __future__ import annotations

import torch

from heedful.errors import HeedfulError

# Published shapes (the models' config.json), except qwen3.5-default: transformers'
# Qwen3_5TextConfig defaults (hidden 4096, 32 layers, three linear-attention layers to one full).
PRESETS: dict[str, tuple[str, dict]] = {
    "qwen3-0.6b": ("qwen3", dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                                 num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                                 max_position_embeddings=40960, rope_theta=1_000_000.0, tie_word_embeddings=True)),
    "qwen3-8b": ("qwen3", dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                               num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                               max_position_embeddings=40960, rope_theta=1_000_000.0)),
    "llama-3.2-1b": ("llama", dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                   num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                                   max_position_embeddings=131072, rope_theta=500_000.0, tie_word_embeddings=True,
                                   rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})),
    "qwen3.5-default": ("qwen3_5_text", {}),
}


def preset_parameters(name: str) -> int:
    """The preset's parameter count, from a model built on the meta device (no memory)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, kwargs = PRESETS[name]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kwargs))
    return sum(p.numel() for p in model.parameters())


def _free_bytes(device) -> int | None:
    """Free memory of a CUDA device, or the machine's available RAM (Linux); None: unknown."""
    if str(device).startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def char_tokenizer():
    """A character-level tokenizer (ids 0..94): enough to feed a random-weights model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(c): i for i, c in enumerate(range(32, 127))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="?")


def _label(model, what: str) -> str:
    return f"{what}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, random weights"


def synthetic_model(layers: int, hidden: int, context: int):
    """The default model's architecture (gated Qwen3.5, every layer full attention), small."""
    from transformers.models.qwen3_5 import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    heads = max(2, hidden // 64)
    cfg = Qwen3_5TextConfig(vocab_size=4096, hidden_size=hidden, intermediate_size=hidden * 3,
                            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 4),
                            head_dim=64, layer_types=["full_attention"] * layers, max_position_embeddings=context)
    torch.manual_seed(0)
    model = Qwen3_5ForCausalLM(cfg).eval()
    return model, char_tokenizer(), _label(model, f"synthetic qwen3_5 ({layers} layers, hidden {hidden})")


def preset_model(name: str, dtype: str = "auto", device: str | None = None):
    """A real architecture at its real size, random weights, built on `device` in `dtype`
    (auto: bfloat16 on CUDA, float32 elsewhere)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, kwargs = PRESETS[name]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dt = {"auto": torch.bfloat16 if str(device).startswith("cuda") else torch.float32, "float32": torch.float32,
          "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    cfg = AutoConfig.for_model(model_type, **kwargs)
    need = preset_parameters(name) * torch.empty(0, dtype=dt).element_size()
    free = _free_bytes(device)
    if free is not None and need > 0.9 * free:
        raise HeedfulError(f"--preset {name}: its weights take {need / 2**30:.1f} GiB in {dt}, and {device} has "
                           f"{free / 2**30:.1f} GiB free (a smaller preset, or --dtype bfloat16)")
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dt).eval()
    return model, char_tokenizer(), _label(model, f"{name} ({model_type})")
