"""Fold compressors: how a block of position-free KV rows becomes one summary row
(automatic fold, autofold.py; NSA's compression branch).

- `MeanPool`: the block's mean key and mean value. No parameters.
- `LearnedPool`: per attention layer and KV head, an attention pooling over the block's rows
  (a learned weight per place in the block plus a learned query scored against each key)
  followed by a linear map with bias, for keys and values separately. Initialised to the
  mean (weights uniform, maps the identity), so training starts from MeanPool. It is trained
  with the model frozen by heedful.train.compressor and stored as a folder:
  `compressor.safetensors` (the tensors) and `compressor.json` (sizes, block, how it was
  trained). About 2·D² parameters per layer and KV head (51k for the embedded model).

Both take keys and values shaped [B, H, N, F, D] (N blocks of F rows; rows that are not
there, the pinned tokens of a block, masked out by `present` [N, F]) and return [B, H, N, D].
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from heedful.errors import HeedfulError

WEIGHTS, META = "compressor.safetensors", "compressor.json"
FOLDER = "fold_compressor"  # a model folder's own compressor (used by default, see app/open.py)


def _masked_mean(x: torch.Tensor, present: torch.Tensor | None) -> torch.Tensor:
    if present is None:
        return x.mean(-2)
    w = present.to(x.dtype)[..., None]  # [N, F, 1]
    return (x * w).sum(-2) / w.sum(-2).clamp(min=1)


def model_sizes(model) -> dict:
    """The sizes a compressor for `model` has: attention layers, key/value heads, head dim."""
    cfg = model.config.get_text_config(decoder=True)
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return {"layers": cfg.num_hidden_layers, "heads": heads, "head_dim": head_dim}


class MeanPool:
    def pool(self, layer: int, keys: torch.Tensor, values: torch.Tensor, present: torch.Tensor | None = None):
        return _masked_mean(keys.float(), present), _masked_mean(values.float(), present)


class LearnedPool(nn.Module):
    def __init__(self, layers: int, heads: int, head_dim: int, block: int):
        super().__init__()
        self.layers, self.heads, self.head_dim, self.block = layers, heads, head_dim, block
        self.digest: str | None = None  # its weights' short sha256 (digest()), once loaded
        eye = torch.eye(head_dim).expand(layers, heads, head_dim, head_dim).clone()
        for kind in ("k", "v"):
            setattr(self, f"place_{kind}", nn.Parameter(torch.zeros(layers, heads, block)))
            setattr(self, f"query_{kind}", nn.Parameter(torch.zeros(layers, heads, head_dim)))
            setattr(self, f"proj_{kind}", nn.Parameter(eye.clone()))
            setattr(self, f"bias_{kind}", nn.Parameter(torch.zeros(layers, heads, head_dim)))

    def _pool_one(self, kind: str, layer: int, x: torch.Tensor, keys: torch.Tensor, present) -> torch.Tensor:
        place = getattr(self, f"place_{kind}")[layer]  # [H, F]
        query = getattr(self, f"query_{kind}")[layer]  # [H, D]
        # scores [B, H, N, F]: the row's place in the block plus its key against a learned query
        scores = place[None, :, None, :] + torch.einsum("bhnfd,hd->bhnf", keys, query)
        if present is not None:
            scores = scores.masked_fill(~present, float("-inf"))
        pooled = torch.einsum("bhnf,bhnfd->bhnd", scores.softmax(-1), x)
        proj, bias = getattr(self, f"proj_{kind}")[layer], getattr(self, f"bias_{kind}")[layer]
        return torch.einsum("bhnd,hde->bhne", pooled, proj) + bias[None, :, None, :]

    def pool(self, layer: int, keys: torch.Tensor, values: torch.Tensor, present: torch.Tensor | None = None):
        k, v = keys.float(), values.float()
        return self._pool_one("k", layer, k, k, present), self._pool_one("v", layer, v, k, present)

    def select_heads(self, start: int, end: int) -> "LearnedPool":
        """The compressor of KV heads start..end-1 only (a tensor-parallel rank's share)."""
        part = LearnedPool(self.layers, end - start, self.head_dim, self.block)
        part.load_state_dict({k: v[:, start:end] for k, v in self.state_dict().items()})
        part.digest = self.digest
        return part.requires_grad_(False).to(next(self.parameters()).device)

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path, trained: dict | None = None) -> Path:
        """Writes the folder atomically (files written aside, then renamed)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"kind": "learned", "layers": self.layers, "heads": self.heads, "head_dim": self.head_dim,
                "block": self.block, "trained": trained or {}}
        tmp_w, tmp_m = folder / (WEIGHTS + ".tmp"), folder / (META + ".tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(tmp_w))
        os.chmod(tmp_w, 0o644)  # safetensors writes 0600: a shared model folder must be readable
        tmp_m.write_text(json.dumps(meta, indent=1) + "\n")
        tmp_w.replace(folder / WEIGHTS)
        tmp_m.replace(folder / META)
        return folder


def digest(folder: str | Path) -> str | None:
    """A short sha256 of a compressor folder's weights (None when there are none): what a
    session's config records, so a replay or resume pools with the same compressor."""
    import hashlib

    path = Path(folder) / WEIGHTS
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_compressor(folder: str | Path, *, layers: int, heads: int, head_dim: int, block: int,
                    device=None, expect: str | None = None) -> LearnedPool:
    """A LearnedPool from its folder, checked against the model's attention layers, the
    session's fold block and, given `expect`, the digest a session recorded (one-line errors
    naming the file)."""
    if str(folder) == "auto":  # the app resolves it (it knows where the model came from)
        raise HeedfulError("--fold-compressor auto: resolve it with heedful.app.open.fold_compressor_for; "
                           "a Session takes mean or a compressor folder")
    folder = Path(folder)
    meta_path, weights_path = folder / META, folder / WEIGHTS
    if not meta_path.is_file() or not weights_path.is_file():
        raise HeedfulError(f"--fold-compressor {folder}: not a compressor folder (needs {META} and {WEIGHTS})")
    try:
        meta = json.loads(meta_path.read_text())
        sizes = tuple(meta[k] for k in ("layers", "heads", "head_dim", "block"))
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise HeedfulError(f"{meta_path}: unreadable compressor description ({e})") from None
    if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in sizes):  # JSON: no true, no 2.0
        raise HeedfulError(f"{meta_path}: layers, heads, head_dim and block must be positive integers")
    want = (layers, heads, head_dim, block)
    if sizes[:3] != want[:3]:
        raise HeedfulError(f"{meta_path}: made for {sizes[0]} layers x {sizes[1]} KV heads x {sizes[2]} dims, "
                           f"the model has {layers} x {heads} x {head_dim}")
    if sizes[3] != block:
        raise HeedfulError(f"{meta_path}: pools blocks of {sizes[3]} tokens, the session's --fold-block is {block}")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    found = digest(folder)
    if expect is not None and found != expect:
        raise HeedfulError(f"{weights_path}: not the compressor the session was recorded with (sha256 {found}, "
                           f"recorded {expect})")
    c = LearnedPool(*sizes)
    try:
        c.load_state_dict(load_file(str(weights_path)))
    except (SafetensorError, OSError) as e:
        raise HeedfulError(f"{weights_path}: {str(e).splitlines()[0]}") from None
    except RuntimeError as e:  # the first line is a header: the mismatches follow
        lines = [x.strip() for x in str(e).splitlines() if x.strip()]
        raise HeedfulError(f"{weights_path}: {' '.join(lines[:2])}") from None
    if not all(torch.isfinite(t).all() for t in c.state_dict().values()):
        raise HeedfulError(f"{weights_path}: holds NaN or infinite values")
    c.requires_grad_(False)
    c.digest = found
    return c.to(device) if device is not None else c
