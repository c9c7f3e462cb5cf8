"""`heedful models`: the models heedful can name (`--model NAME`), where each lives, its
licence and size; the embedded model first."""

from __future__ import annotations

import json

import click


def _size(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.0f} MB"


def model_rows() -> list[dict]:
    from heedful.models.gguf import cache_root, file_sha256
    from heedful.models.loading import default_model_dir
    from heedful.models.named import NAMED

    rows = []
    d = default_model_dir()
    rows.append({"name": "default", "installed": d is not None, "where": str(d) if d else None,
                 "converted": None, "licence": "see docs/model.md", "size": _size(d) if d else None,
                 "about": "heedful's embedded gated model (Qwen3.5-style output gate, trained in this repository)",
                 "install": None})
    for m in NAMED.values():
        path = m.gguf_path()
        converted = None
        if path is not None:
            folder = cache_root() / file_sha256(path)[:32]
            converted = str(folder) if folder.is_dir() else None
        rows.append({"name": m.name, "installed": path is not None, "where": str(path) if path else None,
                     "converted": converted, "licence": m.licence, "size": _size(path) if path else None,
                     "version": m.version(), "hub_id": m.hub_id, "about": m.about,
                     "install": None if path else m.install})
    return rows


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model.")
def models(as_json):
    """List the named models (--model NAME): where each lives, licence, size, how to get it.

    Any Hugging Face folder, hub id or .gguf file works with --model too; HEEDFUL_MODEL sets
    the default."""
    for r in model_rows():
        if as_json:
            click.echo(json.dumps(r))
            continue
        state = r["where"] if r["installed"] else f"not installed: {r['install']}"
        click.echo(f"{r['name']:<8} {_mb(r['size']):>7}  {r['licence']:<17} {r['about']}")
        click.echo(f"{'':<8} {'':>7}  {state}")
        if r.get("converted"):
            click.echo(f"{'':<8} {'':>7}  converted: {r['converted']}")
