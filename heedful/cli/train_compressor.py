"""`heedful train compressor`: train a fold compressor for a model, the model frozen
(heedful/train/compressor.py), and write its folder."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import click

from heedful.app.options import model_options
from heedful.errors import HeedfulError


def _texts(paths, max_chars: int) -> list[str]:
    out = []
    for p in paths:
        try:
            with open(p, encoding="utf-8", errors="replace") as f:
                out.append(f.read(max_chars))
        except OSError as e:
            raise HeedfulError(f"--text {p}: {e.strerror}") from None
    return out


@click.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder to write (compressor.safetensors, compressor.json). The model folder's "
                   "fold_compressor/ is what --fold-compressor auto uses.")
@model_options
@click.option("--window", type=click.IntRange(min=1), default=32, show_default=True,
              help="W the compressor is trained under.")
@click.option("--fold-rows", type=click.IntRange(min=1), default=32, show_default=True,
              help="R: summary rows (--fold-budget) it is trained under.")
@click.option("--fold-block", type=click.IntRange(min=1), default=16, show_default=True,
              help="F: tokens per summary row (sessions must use the same --fold-block).")
@click.option("--text", "texts", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Training text (repeatable); generated stories, recall episodes and copy drills are mixed in "
                   "unless --no-synthetic.")
@click.option("--max-chars", type=click.IntRange(min=1000), default=2_000_000, show_default=True,
              help="Characters read from the start of each --text file.")
@click.option("--synthetic/--no-synthetic", default=True, show_default=True,
              help="Mix in 400k characters of generated text (heedful.train.synthetic).")
@click.option("--eval-text", type=click.Path(exists=True, dir_okay=False), default=None, metavar="FILE",
              help="Held-out text for the figures at the end [default: generated text of another seed].")
@click.option("--seq-len", type=click.IntRange(min=8), default=None,
              help="Tokens per training row [default: the model's context length, at most 256].")
@click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-3, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
@click.option("--json", "as_json", is_flag=True, help="Print the record as one JSON object (last line).")
def compressor(out_dir, model, dtype, device, trust_remote_code, window, fold_rows, fold_block, texts, max_chars,
               synthetic, eval_text, seq_len, steps, batch, lr, seed, threads, as_json):
    """Train a fold compressor (automatic fold's learned pooling) with the model frozen.

    The model's next-token loss is minimised under the fold pattern itself (window W, at most
    R summaries of F tokens each, each at the distance the engine gives it), on every token
    that sees a summary. Starts from the mean (what --fold-compressor mean does) and prints
    held-out perplexity for full attention, the window alone at W + R rows, mean pooling, the
    learned compressor, and the learned compressor fed another text's blocks (a control: what
    it gains without reading the text)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    if not texts and not synthetic:
        raise click.UsageError("no training text: give --text FILE or leave --synthetic on")
    from heedful.store.db import check_regular

    for p in texts:  # a FIFO would be waited on forever
        check_regular(p, "--text ")
    if eval_text:
        check_regular(eval_text, "--eval-text ")
    out = Path(out_dir)
    made = not out.exists()
    try:  # before any training: a folder that cannot be written is found now, not after minutes
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HeedfulError(f"--out {out_dir}: {e.strerror}") from None
    try:
        _train(out, out_dir, model, dtype, device, trust_remote_code, window, fold_rows, fold_block, texts,
               max_chars, synthetic, eval_text, seq_len, steps, batch, lr, seed, as_json)
    except BaseException:
        if made:  # a run that fails leaves no new folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise


def _train(out, out_dir, model, dtype, device, trust_remote_code, window, fold_rows, fold_block, texts, max_chars,
           synthetic, eval_text, seq_len, steps, batch, lr, seed, as_json):
    import torch

    from heedful.models.loading import load_model
    from heedful.train.compressor import EVAL_SEED, FoldPattern, synthetic_text, token_rows, train
    if synthetic and seed + 1 == EVAL_SEED:
        raise HeedfulError(f"--seed {seed}: its generated text is the held-out text (seed {EVAL_SEED}); pick another")
    lm = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    cfg = lm.model.config.get_text_config(decoder=True)
    if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        raise HeedfulError("automatic fold needs a model whose layers are all full attention")
    limit = getattr(cfg, "max_position_embeddings", None) or 256
    seq_len = seq_len or min(256, limit)
    if seq_len > limit:
        raise HeedfulError(f"--seq-len {seq_len}: longer than the model's context ({limit})")
    if seq_len <= window + fold_block:
        raise HeedfulError(f"--seq-len {seq_len}: no token would see a summary (needs > --window {window} + "
                           f"--fold-block {fold_block})")
    corpus = _texts(texts, max_chars) + ([synthetic_text(seed + 1, 400_000)] if synthetic else [])
    rows = torch.cat([token_rows(lm.tokenizer, t, seq_len) for t in corpus])
    held = _texts([eval_text], max_chars) if eval_text else [synthetic_text(EVAL_SEED, 60_000)]
    eval_rows = token_rows(lm.tokenizer, held[0], seq_len)[:16]
    if len(rows) == 0 or len(eval_rows) == 0:
        raise HeedfulError(f"not enough text for one row of {seq_len} tokens")
    pattern = FoldPattern(window, fold_rows, fold_block)
    click.echo(f"training on {len(rows)} rows of {seq_len} tokens; W {window}, R {fold_rows}, F {fold_block}; "
               f"{steps} steps of {batch}", err=True)
    with click.progressbar(length=steps, label="compressor", file=sys.stderr,
                           item_show_func=lambda x: x) as bar:
        def progress(step, loss):
            bar.update(1, f"loss {loss:.3f}")

        comp, record = train(lm.model, lm.tokenizer, pattern, train_rows=rows, eval_rows=eval_rows, steps=steps,
                             batch=batch, lr=lr, seed=seed, progress=progress)
    record.update(model=lm.name, texts=[str(t) for t in texts], synthetic=synthetic,
                  eval_text=str(eval_text) if eval_text else f"synthetic (seed {EVAL_SEED})")
    comp.save(out_dir, record)
    ppl = {k: None if v is None else round(math.exp(v), 3) for k, v in record["eval_loss"].items()}
    if as_json:
        click.echo(json.dumps({"out": str(Path(out_dir)), "ppl": ppl, **record}))
        return
    click.echo(f"wrote {out_dir} ({record['seconds']} s)")
    click.echo("held-out perplexity: " + ", ".join(f"{k} {v}" for k, v in ppl.items()))
