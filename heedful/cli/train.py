"""`heedful train`: build the corpus, train the tokenizer and a gated (or ungated) model;
`heedful train evaluate` and `heedful train ship` for what comes after."""

from __future__ import annotations

import click


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--corpus", "corpus_dir", default="runs/corpus", show_default=True, metavar="DIR",
              help="Corpus folder (built there first if it has no manifest.json).")
@click.option("--out", "out_dir", default="runs/gated", show_default=True, metavar="DIR",
              help="Output folder: the trained model, its tokenizer, checkpoints, metrics.")
@click.option("--tokenizer", "tokenizer_dir", default=None, metavar="DIR",
              help="Reuse this tokenizer (the ungated twin must share the gated model's).")
@click.option("--init-from", default=None, metavar="DIR",
              help="Start from this trained model's weights (a second stage of the recipe).")
@click.option("--preset", type=click.Choice(["cpu", "gpu", "tiny"]), default=None,
              help="Model size preset [default: gpu when CUDA is available, else cpu].")
@click.option("--hidden", type=click.IntRange(min=8), default=None, help="Override: hidden size.")
@click.option("--layers", type=click.IntRange(min=1), default=None, help="Override: number of layers.")
@click.option("--heads", type=click.IntRange(min=1), default=None, help="Override: attention heads.")
@click.option("--kv-heads", type=click.IntRange(min=1), default=None, help="Override: key/value heads.")
@click.option("--head-dim", type=click.IntRange(min=4), default=None, help="Override: head dimension.")
@click.option("--ffn", type=click.IntRange(min=8), default=None, help="Override: MLP intermediate size.")
@click.option("--vocab", "vocab_size", type=click.IntRange(min=300), default=4096, show_default=True)
@click.option("--seq-len", type=click.IntRange(min=16), default=256, show_default=True)
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=1800, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--warmup", type=click.IntRange(min=1), default=None, help="Warm-up steps [default: min(100, steps/10)].")
@click.option("--recall-fraction", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="Share of rows that start with a synthetic recall episode.")
@click.option("--copy-fraction", type=click.FloatRange(0, 0.95), default=0.0, show_default=True,
              help="Share of the recall stream that is copy drills (a list, then the same list again).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--ckpt-every", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPU threads for torch.")
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu).")
@click.option("--bf16", is_flag=True, help="bfloat16 autocast (CUDA).")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Train for about this long: --steps is replaced by what the measured speed allows.")
@click.option("--ungated", is_flag=True, help="Train the ungated twin (Qwen3) instead of the gated Qwen3.5.")
@click.option("--resume", is_flag=True, help="Continue from OUT/ckpt if there is one.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_context
def train(ctx, corpus_dir, out_dir, tokenizer_dir, init_from, preset, hidden, layers, heads, kv_heads, head_dim, ffn, vocab_size,
          seq_len, batch_size, steps, lr, warmup, recall_fraction, copy_fraction, seed, eval_every, ckpt_every, threads, device, bf16,
          minutes, ungated, resume, no_progress):
    """Train the embedded gated model (or its ungated twin) from a license-clean corpus.

    Reproducible: the same options and seed give the same batches, and --resume continues
    an interrupted run exactly where its last checkpoint left it. The options belong to
    training; `heedful train evaluate|ship ...` take their own."""
    if ctx.invoked_subcommand is not None:
        return
    import dataclasses

    import torch

    from heedful.errors import HeedfulError
    from heedful.train.loop import TrainConfig, train as run
    from heedful.train.models import PRESETS

    if preset is None:
        preset = "gpu" if (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda") else "cpu"
    size = dataclasses.replace(PRESETS[preset])
    for name, v in (("hidden_size", hidden), ("num_hidden_layers", layers), ("num_attention_heads", heads),
                    ("num_key_value_heads", kv_heads), ("head_dim", head_dim), ("intermediate_size", ffn)):
        if v is not None:
            setattr(size, name, v)
    if size.num_attention_heads % size.num_key_value_heads:
        raise HeedfulError(f"--heads {size.num_attention_heads} must be a multiple of --kv-heads "
                           f"{size.num_key_value_heads}")
    size.max_position_embeddings = max(size.max_position_embeddings, seq_len)
    cfg = TrainConfig(corpus_dir=corpus_dir, out_dir=out_dir, tokenizer_dir=tokenizer_dir, init_from=init_from, gated=not ungated,
                      size=size, vocab_size=vocab_size, seq_len=seq_len, batch_size=batch_size, steps=steps, lr=lr,
                      recall_fraction=recall_fraction, copy_fraction=copy_fraction, seed=seed, eval_every=eval_every, ckpt_every=ckpt_every,
                      threads=threads, device=device, dtype="bfloat16" if bf16 else "float32", max_minutes=minutes,
                      warmup=warmup if warmup is not None else min(100, max(1, steps // 10)))
    run(cfg, resume=resume, log=lambda m: click.echo(m, err=True), progress=not no_progress)


@train.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--corpus", "corpus_dir", default="runs/corpus", show_default=True, metavar="DIR",
              help="The corpus the model was trained on (its held-out split is read).")
@click.option("--rows", type=click.IntRange(min=1), default=64, show_default=True, help="Held-out rows for perplexity.")
@click.option("--episodes", type=click.IntRange(min=1), default=100, show_default=True, help="Held-out recall episodes.")
@click.option("--seq-len", type=click.IntRange(min=16), default=256, show_default=True, help="Held-out row length.")
@click.option("--bpc-chars", type=click.IntRange(min=1), default=1_000_000, show_default=True,
              help="Characters of held-out prose for bits per character.")
@click.option("--device", default="cpu", show_default=True, help="torch device.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None, help="Also write the JSON here.")
def evaluate(model_dir, corpus_dir, rows, episodes, seq_len, bpc_chars, device, out):
    """Held-out perplexity, bits per character, first-token attention, recall and samples (JSON)."""
    import json
    from pathlib import Path

    from heedful.train.evaluate import evaluate as run

    text = json.dumps(run(model_dir, corpus_dir, rows=rows, episodes=episodes, seq_len=seq_len, bpc_chars=bpc_chars,
                          device=device), indent=1)
    if out:
        Path(out).write_text(text + "\n")
    click.echo(text)


@train.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--bf16", is_flag=True, help="Store the weights in bfloat16 (half the size).")
def ship(model_dir, bf16):
    """Copy a trained gated model into the package as the embedded default (<= 40 MiB)."""
    from heedful.models.loading import EMBEDDED_MODEL_DIR
    from heedful.train.ship import ship as run

    n = run(model_dir, bf16=bf16)
    click.echo(f"shipped {model_dir} -> {EMBEDDED_MODEL_DIR} ({n / 2**20:.2f} MiB)")


def _add_corpus_command():
    from heedful.cli.train_compressor import compressor
    from heedful.train.corpus_cli import corpus

    train.add_command(corpus)
    train.add_command(compressor)


_add_corpus_command()
