"""GGUF files (what llama.cpp and ollama users have): dequantized once, through transformers'
GGUF reader, into a safetensors folder in the user's cache, keyed by the file's sha256; every
later load of the same file is a plain safetensors load.

The folder is written under a temporary name and renamed into place, so a killed conversion
leaves no half folder: the next run starts over. `provenance.json` in the folder says where
it came from (file, sha256, and for a named model its package, version and licence).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from heedful.errors import ModelLoadError

PROVENANCE = "provenance.json"


def cache_root() -> Path:
    """Where converted models live: $HEEDFUL_CACHE, else the platform's user cache dir."""
    env = os.environ.get("HEEDFUL_CACHE")
    if env:
        return Path(env).expanduser() / "gguf"
    import platformdirs

    return Path(platformdirs.user_cache_dir("heedful")) / "gguf"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_file(path: Path, name: str) -> None:
    if not path.is_file():
        raise ModelLoadError(f"--model {name}: no such file" if not path.exists() else
                             f"--model {name}: not a regular file")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelLoadError(f"--model {name}: not a GGUF file (no GGUF magic)")


def gguf_in(name: str, file: str) -> Path:
    """The GGUF file `file` of a model folder, or of a hub repository (through the hub's
    cache: HF_HOME and HF_HUB_OFFLINE respected, the hub's progress bar on)."""
    where = Path(name).expanduser()
    if where.is_dir():
        path = where / file
        if not path.is_file():
            raise ModelLoadError(f"--gguf-file {file}: no such file in {name}")
        return path
    if Path(file).name != file:
        raise ModelLoadError(f"--gguf-file {file}: a file name in the repository, not a path")
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=name, filename=file))
    except Exception as e:  # offline, no such repository or file: the hub's own reason, one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"--model {name} --gguf-file {file}: cannot get it from the hub: {msg[:160]}") from None


def _check_readable(path: Path, name: str) -> None:
    """The whole file parses (header, metadata, every tensor's data in bounds) before any
    conversion starts: a file cut short anywhere is one line, not the reader's traceback."""
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(f"--model {name}: reading GGUF needs the gguf package (pip install gguf)")
    from gguf import GGUFReader

    try:
        GGUFReader(str(path))
    except Exception as e:  # struct.error, ValueError, IndexError...: the file is cut short or damaged
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"--model {name}: not a readable GGUF file (truncated or damaged: {msg[:120]})") from None


def converted_folder(path: str | Path, name: str, provenance: dict | None = None) -> Path:
    """The safetensors folder of a GGUF file, converted on first use."""
    path = Path(path).expanduser()
    _check_file(path, name)
    sha = file_sha256(path)
    folder = cache_root() / sha[:32]
    if (folder / PROVENANCE).is_file():
        return folder
    _check_readable(path, name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.write(f"heedful: converting {path.name} to safetensors, once (cached in {folder})\n")
    tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=folder.parent))
    try:
        _convert(path, tmp, name)
        info = {"file": str(path), "sha256": sha, "size": path.stat().st_size, **(provenance or {})}
        (tmp / PROVENANCE).write_text(json.dumps(info, indent=2) + "\n")
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first: theirs stands
            if not (folder / PROVENANCE).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _convert(path: Path, out: Path, name: str) -> None:
    """Dequantizes into float32 (transformers keeps a GGUF's weights packed otherwise), copies
    them into a fresh model of the same config without the quantization note and saves it in
    bfloat16, with the tokenizer, its chat template and the generation config."""
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(f"--model {name}: reading GGUF needs the gguf package (pip install gguf)")
    folder, file = str(path.parent), path.name
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32,
                                                     trust_remote_code=False, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file, trust_remote_code=False,
                                                  local_files_only=True)
    except (ValueError, KeyError, OSError, RuntimeError, TypeError, EOFError, IndexError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(f"--model {name}: cannot read this GGUF file: {msg[:200]}") from None
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = type(model)(config)
    fresh.load_state_dict(model.state_dict())
    fresh.generation_config = model.generation_config
    fresh.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
