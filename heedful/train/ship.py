"""Copies a trained model into the package as the embedded default (safetensors, config,
tokenizer and the training record; no checkpoints, no optimizer state): `heedful train ship`.
With bf16=True the weights are stored in bfloat16 (half the size; `load_model` casts them to
the dtype it runs in: float32 on CPU)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from heedful.errors import HeedfulError
from heedful.models.loading import EMBEDDED_MODEL_DIR
from heedful.selector.compressor import FOLDER, META

FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "special_tokens_map.json", "training.json"]
LIMIT = 40 * 1024 * 1024


def _bf16_weights(src: Path) -> tuple[bytes, dict]:
    sd = load_file(str(src / "model.safetensors"))
    sd = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    cfg = json.loads((src / "config.json").read_text())
    cfg["dtype"] = "bfloat16"
    return save(sd, metadata={"format": "pt"}), cfg


def ship(model_dir: str | Path, dest: str | Path = EMBEDDED_MODEL_DIR, bf16: bool = False) -> int:
    src, dest = Path(model_dir), Path(dest)
    if not (src / "config.json").is_file():
        raise HeedfulError(f"{src}: no config.json (not a trained model folder)")
    cfg = json.loads((src / "config.json").read_text())
    if cfg.get("model_type") not in ("qwen3_5_text", "qwen3_5"):
        raise HeedfulError(f"{src}: not a gated Qwen3.5 model ({cfg.get('model_type')}); only the gated model ships")
    if not (src / "model.safetensors").is_file():
        raise HeedfulError(f"{src}: no model.safetensors")
    weights, new_cfg = _bf16_weights(src) if bf16 else (None, None)
    total = sum((src / f).stat().st_size for f in FILES if (src / f).is_file())
    if weights is not None:
        total += len(weights) - (src / "model.safetensors").stat().st_size
    if total > LIMIT:
        raise HeedfulError(f"{src}: {total / 2**20:.1f} MiB is over the {LIMIT / 2**20:.0f} MiB limit")
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.iterdir():
        if old.is_file() and old.name != "__init__.py":
            old.unlink()
    # a fold compressor was trained against the old weights: it goes with them (the new
    # model's own, if its folder has one, comes along)
    shutil.rmtree(dest / FOLDER, ignore_errors=True)
    if (src / FOLDER / META).is_file():
        shutil.copytree(src / FOLDER, dest / FOLDER)
    for f in FILES:
        if (src / f).is_file():
            shutil.copy2(src / f, dest / f)
    if weights is not None:
        (dest / "model.safetensors").write_bytes(weights)
        (dest / "config.json").write_text(json.dumps(new_cfg, indent=2) + "\n")
    return total
