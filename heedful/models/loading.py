"""Model loading: any Hugging Face causal LM from a local directory, a hub id, a GGUF file
(converted once to safetensors, heedful.models.gguf) or a named model (heedful.models.named).

Weights as safetensors only (never pickle); `trust_remote_code` off unless asked; dtype and device chosen sensibly
(CUDA if present, bf16 there, fp32 on CPU). Every failure a user can cause becomes one
line naming the argument: a missing path, a folder without a config, an unsupported
architecture, a hub id that is not in the local cache while offline.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from heedful.errors import ModelLoadError
from heedful.selector.config import RANK_HEADS, SUM_ACROSS_RANKS
from heedful.selector.config import GATED_TYPES

# Architectures whose attention calls transformers' attention interface and uses
# rotate-half RoPE, which heedful's position compaction relies on (a cached key moves
# from position p to p' by one more rotation). Gated: qwen3_5*, qwen3_next (selector/gates.py).
SUPPORTED_TYPES = GATED_TYPES | {
    "llama",
    "mistral",
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str  # what the user asked for ("default" for the embedded model)
    gated: bool  # attention output multiplied by a sigmoid gate (no attention sink)


EMBEDDED_MODEL_DIR = Path(__file__).resolve().parent / "default_model"  # `heedful train ship` writes it


def default_model_dir() -> Path | None:
    """The embedded gated model shipped inside the package, if this build has one."""
    d = EMBEDDED_MODEL_DIR
    return d if (d / "config.json").is_file() else None


def pick_device(device: str | None = None) -> torch.device:
    if device:
        try:
            dev = torch.device(device)
        except RuntimeError as e:
            raise ModelLoadError(f"--device {device!r}: {e}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(f"--device {device!r}: CUDA is not available on this machine")
        if dev.type == "meta":
            raise ModelLoadError(f"--device {device!r}: holds no data, a model cannot run on it")
        try:  # torch knows the name; can this build and machine allocate there?
            torch.empty(1, device=dev)
        except (RuntimeError, NotImplementedError, AssertionError) as e:
            reason = str(e).splitlines()[0].split(". ")[0][:160]  # torch's message lists every backend
            raise ModelLoadError(f"--device {device!r}: cannot run here: {reason}") from None
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ModelLoadError(f"--dtype {dtype!r}: expected one of {', '.join(sorted(table))} or auto")
    return table[dtype]


# "name" or "org/name": anything else (./x, /x, ~/x, a/b/c) is a filesystem path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or not _HUB_ID.match(name)


def resolve_source(name: str | None) -> tuple[str, str, bool]:
    """Returns (what to pass to from_pretrained, display name, is_local). No name: the
    HEEDFUL_MODEL environment variable, else the embedded model."""
    from heedful.models.named import NAMED, named_folder

    if name is None:
        name = os.environ.get("HEEDFUL_MODEL") or None
    gguf_file = os.environ.get("HEEDFUL_GGUF_FILE")
    if gguf_file and (name in (None, "default") or name in NAMED or name.lower().endswith(".gguf")):
        given = f"--model {name}" if name else "the default model"
        raise ModelLoadError(f"--gguf-file {gguf_file}: names a file of the folder or hub repository that "
                             f"--model DIR or --model ORG/NAME gives, not of {given}")
    if name in NAMED:
        return str(named_folder(name)), name, True
    if gguf_file:
        from heedful.models.gguf import converted_folder, gguf_in

        return str(converted_folder(gguf_in(name, gguf_file), f"{name} --gguf-file {gguf_file}")), name, True
    if name is not None and name.lower().endswith(".gguf"):
        from heedful.models.gguf import converted_folder

        return str(converted_folder(name, name)), name, True
    if name is None or name == "default":
        d = default_model_dir()
        if d is None:
            raise ModelLoadError(
                "no default model is installed yet: pass --model with a local directory or a Hugging Face id"
            )
        return str(d), "default", True
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise ModelLoadError(f"--model {name}: folder has no config.json (not a Hugging Face model folder)")
        return expanded, name, True
    if os.path.exists(expanded):
        raise ModelLoadError(f"--model {name}: is a file, expected a model folder or a Hugging Face id")
    if _looks_like_path(name):
        raise ModelLoadError(f"--model {name}: no such directory")
    return name, name, False


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or os.environ.get(
        "TRANSFORMERS_OFFLINE", ""
    ).lower() in ("1", "true", "yes")


def _strict_errors() -> tuple:
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # an older huggingface_hub: its checks raise ValueError or TypeError
        return ()
    return (StrictDataclassError,)


def load_config(source: str, name: str, is_local: bool, trust_remote_code: bool = False):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(
            source, trust_remote_code=trust_remote_code, local_files_only=is_local or _hub_offline()
        )
    except OSError as e:
        if not is_local:
            why = "not in the local Hugging Face cache and the Hub is offline" if _hub_offline() else (
                "could not be fetched from the Hugging Face Hub (offline? set HF_HUB_OFFLINE=1 to fail fast)"
            )
            raise ModelLoadError(f"--model {name}: {why}") from None
        raise ModelLoadError(f"--model {name}: cannot read config.json: {str(e).splitlines()[0]}") from None
    except (ValueError, TypeError, *_strict_errors()) as e:  # transformers' strict config fields
        msg = " ".join(str(e).split())
        if "trust_remote_code" in msg:
            raise ModelLoadError(f"--model {name}: its folder ships its own code (auto_map), which heedful runs only "
                                 "with --trust-remote-code") from None
        raise ModelLoadError(f"--model {name}: config.json: {msg[:300]}") from None


# Architectures transformers runs that heedful refuses, and why: the engine's contract
# (one rotary embedding shared by every attention layer, the attention function computing
# plain softmax attention) does not cover them, and heedful never silently differs.
REFUSED_TYPES = {
    "gemma2": "its attention soft-caps the scores (attn_logit_softcapping), which heedful's attention does not",
    "gemma3": "its local and global layers use two different rotary embeddings; heedful's cache rotates keys with "
              "one",
    "gemma3_text": "its local and global layers use two different rotary embeddings; heedful's cache rotates keys "
                   "with one",
}


def check_supported(config, name: str) -> bool:
    """Raises for an architecture heedful cannot drive; returns whether it is gated."""
    text_config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    mtype = getattr(text_config, "model_type", None) or getattr(config, "model_type", "?")
    if mtype in REFUSED_TYPES:
        raise ModelLoadError(f"--model {name}: architecture {mtype!r} is not supported: {REFUSED_TYPES[mtype]}")
    if mtype not in SUPPORTED_TYPES:
        raise ModelLoadError(
            f"--model {name}: unsupported architecture {mtype!r} "
            f"(heedful supports {', '.join(sorted(SUPPORTED_TYPES))})"
        )
    return mtype in GATED_TYPES


def check_shapes(config, name: str) -> None:
    """The sizes the engine divides by are whole numbers >= 1 that divide as they must (a
    hand-edited config.json is one line, not a ZeroDivisionError)."""
    cfg = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    heads = getattr(cfg, "num_attention_heads", None)
    kv = getattr(cfg, "num_key_value_heads", None)
    kv = heads if kv is None else kv
    for key, v in (("num_attention_heads", heads), ("num_key_value_heads", kv),
                   ("hidden_size", getattr(cfg, "hidden_size", None)),
                   ("num_hidden_layers", getattr(cfg, "num_hidden_layers", None)),
                   ("vocab_size", getattr(cfg, "vocab_size", None))):
        if v is not None and (type(v) is not int or v < 1):
            raise ModelLoadError(f"--model {name}: config.json: {key} is {v!r}, not a whole number >= 1")
    if heads and kv and heads % kv:
        raise ModelLoadError(f"--model {name}: config.json: num_attention_heads {heads} is not a multiple of "
                             f"num_key_value_heads {kv}")


# what a tokenizer is saved as (tokenizer_config.json alone only names a class)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")

SMALL_MODEL_PARAMS = 50_000_000


def tune_cpu_threads(model, device: torch.device) -> None:
    """One intra-op thread for a small model on CPU, unless the user chose (OMP_NUM_THREADS).
    Decoding one token is matrix-vector work too small to split: on a 2-core machine two
    threads ran 30x slower (9 vs 292 tokens/s) as soon as another process used a core."""
    if device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return
    if sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS:
        torch.set_num_threads(1)


def load_model(
    name: str | None = None,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str = "heedful",
    adapter: str | None = None,
    tp: str | None = None,
    device_map: str | None = None,
    max_memory: str | None = None,
    offload_folder: str | None = None,
) -> LoadedModel:
    """Loads a causal LM and its tokenizer, ready for a heedful Session. `adapter`: a peft
    LoRA adapter folder, merged into the weights (apply_adapter). `tp="auto"`: this
    process's shard of a tensor-parallel model, under torchrun; `device_map` ("auto"):
    layers placed by accelerate on one GPU and CPU memory (`max_memory` like
    "0=20GiB,cpu=60GiB", `offload_folder` for disk) - see heedful.models.parallel."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from heedful.models import parallel
    from heedful.selector.attention import register

    register()
    # transformers' per-load progress bars would interleave with our one-line errors and
    # with streamed output; small and local loads are quick.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    source, display, is_local = resolve_source(name)
    config = load_config(source, display, is_local, trust_remote_code)
    gated = check_supported(config, display)
    check_shapes(config, display)
    placement: dict = {}
    parallel.check_options(tp, device, device_map, adapter, max_memory, offload_folder)
    if tp is not None:  # each rank loads its own shard; torchrun's world is joined first
        world = parallel.require_torchrun(tp)
        parallel.require_accelerate(f"--tp {tp}")
        parallel.check_tp_shapes(config.get_text_config(decoder=True) if hasattr(config, "get_text_config")
                                 else config, world, display)
        parallel.connect(world)
        dev = torch.device(parallel.accelerator(), world.local_rank) if parallel.accelerator() == "cuda" \
            else torch.device("cpu")
        if world.size > 1:  # a world of one (torchrun --nproc-per-node 1) loads whole
            placement = parallel.tp_kwargs(config, world, display)
    elif device_map is not None:
        placement = parallel.device_map_kwargs(device_map, device, max_memory, offload_folder)
        dev = pick_device(device)
    else:
        dev = pick_device(device)
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else pick_dtype(dtype, dev)
    local_only = is_local or _hub_offline()
    if is_local and not any((Path(source) / f).is_file() for f in TOKENIZER_FILES):
        raise ModelLoadError(f"--model {display}: no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, trust_remote_code=trust_remote_code, local_files_only=local_only
        )
    except (OSError, ValueError, TypeError) as e:
        raise ModelLoadError(f"--model {display}: cannot load its tokenizer: {str(e).splitlines()[0]}") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=torch_dtype,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            local_files_only=local_only,
            attn_implementation=attn_implementation,
            output_loading_info=True,
            **placement,
        )
        model, info = model
    except OSError as e:
        msg = str(e).splitlines()[0]
        if "safetensors" in msg.lower() or "model.safetensors" in msg:
            msg = "no safetensors weights found (heedful loads safetensors only)"
        raise ModelLoadError(f"--model {display}: {msg}") from None
    except ValueError as e:
        raise ModelLoadError(f"--model {display}: {str(e).splitlines()[0]}") from None
    except (SafetensorError, RuntimeError, EOFError) as e:
        if tp is not None and parallel.is_lost_peer(e):
            raise  # another rank is gone: not this file's fault (heedful.app.distributed says so)
        raise ModelLoadError(f"--model {display}: its weights cannot be read (truncated or corrupt file?): "
                             f"{str(e).splitlines()[0]}") from None
    missing = sorted(info.get("missing_keys") or ())
    if missing:  # transformers would fill them with random values
        raise ModelLoadError(f"--model {display}: its weights miss {len(missing)} tensor"
                             f"{'s' if len(missing) > 1 else ''} ({', '.join(missing[:3])}"
                             f"{', ...' if len(missing) > 3 else ''})")
    if adapter:
        model = apply_adapter(model, adapter)
    if placement:  # already where it runs: each rank's shard, or accelerate's placement
        if device_map is not None:
            dev = parallel.check_placement(model, device_map)
        else:  # tensor parallel: each rank holds some heads
            setattr(model, SUM_ACROSS_RANKS, parallel.sum_across_ranks)
            setattr(model, RANK_HEADS, (world.rank, world.size))
        model.eval()
    else:
        model.to(dev).eval()
    tune_cpu_threads(model, dev)
    return LoadedModel(model=model, tokenizer=tokenizer, name=display, gated=gated)


# what a model's fingerprint hashes of its config (pickers and stored sessions carry it)
ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "intermediate_size", "vocab_size", "head_dim")


def model_fingerprint(model) -> str:
    """Its architecture and a sample of its embedding (rounded to bfloat16, so a float32
    and a bfloat16 load agree)."""
    import hashlib
    import json

    cfg = model.config
    cfg = cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg
    arch = {k: getattr(cfg, k, None) for k in ARCH_KEYS}
    emb = model.get_input_embeddings().weight.detach()
    if hasattr(emb, "full_tensor"):  # tensor parallel: a DTensor, sharded; every rank gathers the whole
        emb = emb.full_tensor()
    sample = emb[: min(256, emb.shape[0])].to("cpu", torch.bfloat16).float().numpy().tobytes()
    h = hashlib.sha256(json.dumps(arch, sort_keys=True).encode())
    h.update(sample)
    return h.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer) -> str:
    """Its vocabulary and special tokens."""
    import hashlib
    import json

    vocab = sorted(tokenizer.get_vocab().items())
    special = {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())}
    return hashlib.sha256(json.dumps([vocab, special], ensure_ascii=False).encode()).hexdigest()[:16]


def adapter_fingerprint(state: dict) -> str:
    """A hash of a LoRA adapter's tensors (names and values rounded to bfloat16)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().to("cpu", torch.bfloat16).float().numpy().tobytes())
    return h.hexdigest()[:16]


def apply_adapter(model, path: str):
    """Merges a peft LoRA adapter (adapter_config.json + adapter_model.safetensors) into the
    model's weights, so the engine sees a plain model; `model.heedful_adapter` keeps the
    adapter's fingerprint. Errors are one line naming --adapter."""
    folder = Path(os.path.expanduser(path))
    where = f"--adapter {path}"
    if not folder.is_dir():
        raise ModelLoadError(f"{where}: no such folder")
    weights = folder / "adapter_model.safetensors"
    if not (folder / "adapter_config.json").is_file() or not weights.is_file():
        raise ModelLoadError(f"{where}: expected adapter_config.json and adapter_model.safetensors (a peft adapter)")
    try:
        from peft import PeftModel
        from safetensors.torch import load_file

        state = load_file(str(weights))
        with warnings.catch_warnings():  # peft calls transformers' deprecated names (FutureWarning)
            warnings.simplefilter("ignore", FutureWarning)
            merged = PeftModel.from_pretrained(model, str(folder), is_trainable=False).merge_and_unload()
    except ImportError:
        raise ModelLoadError(f"{where}: needs the peft package (pip install peft)") from None
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, SafetensorError) as e:
        raise ModelLoadError(f"{where}: cannot be applied to this model: {str(e).splitlines()[0]}") from None
    merged.heedful_adapter = adapter_fingerprint(state)
    return merged
