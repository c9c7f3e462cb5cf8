"""Copies a trained model into the package as the embedded default (safetensors, config,
tokenizer and the training record; no checkpoints, no optimizer state): `heedful train ship`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from heedful.errors import HeedfulError
from heedful.models.loading import EMBEDDED_MODEL_DIR

FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "special_tokens_map.json", "training.json"]
LIMIT = 40 * 1024 * 1024


def ship(model_dir: str | Path, dest: str | Path = EMBEDDED_MODEL_DIR) -> int:
    src, dest = Path(model_dir), Path(dest)
    if not (src / "config.json").is_file():
        raise HeedfulError(f"{src}: no config.json (not a trained model folder)")
    cfg = json.loads((src / "config.json").read_text())
    if cfg.get("model_type") not in ("qwen3_5_text", "qwen3_5"):
        raise HeedfulError(f"{src}: not a gated Qwen3.5 model ({cfg.get('model_type')}); only the gated model ships")
    total = sum((src / f).stat().st_size for f in FILES if (src / f).is_file())
    if total > LIMIT:
        raise HeedfulError(f"{src}: {total / 2**20:.1f} MiB is over the {LIMIT / 2**20:.0f} MiB limit")
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.iterdir():
        if old.is_file() and old.name != "__init__.py":
            old.unlink()
    for f in FILES:
        if (src / f).is_file():
            shutil.copy2(src / f, dest / f)
    return total
