"""`heedful bench fold`: perplexity of a text streamed through the engine token by token
(teacher-forced, each token's rows computed under the policy in force), with full attention,
with the window alone at B rows, and with a window W plus automatic fold summaries at the
same B rows (selector/autofold.py), made by the session's fold compressor and, when that is a
learned one, by the mean as well. The text is cut into segments of the model's context
length, each streamed from an empty session; the figures pool their tokens. The last line is
one JSON object with --json."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import click

from heedful.app.options import model_options
from heedful.errors import HeedfulError


def stream_nll(session, ids: list[int], bar=None) -> float:
    """Mean negative log-likelihood (nats) of ids[1:] given what the engine holds, fed one
    token per step like decoding. A measurement: the tokens are appended without a prompt
    event (the session records nothing)."""
    import torch

    session.feed(ids[:1])
    total = 0.0
    for tid in ids[1:]:
        total -= float(torch.log_softmax(session.next_logits, -1)[tid])
        session.feed([tid])
        if bar is not None:
            bar.update(1)
    return total / max(1, len(ids) - 1)


@click.command()
@click.option("--text", "path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Plain text to stream (cut to the model's context length).")
@click.option("--synthetic", type=click.Choice(["stories", "drills", "mix"]), default=None,
              help="Instead of --text: held-out generated stories, copy drills, or the mix compressors are "
                   "trained on (stories, recall episodes, drills; another seed than training's).")
@click.option("--window", type=click.IntRange(min=1), default=64, show_default=True, help="W of the fold run.")
@click.option("--budget", type=click.IntRange(min=2), default=128, show_default=True,
              help="KV rows for the window-only and the fold runs (the fold run keeps B - W summaries).")
@click.option("--fold-block", type=click.IntRange(min=1), default=16, show_default=True,
              help="Tokens pooled into one summary row.")
@click.option("--fold-compressor", default=None, metavar="auto|mean|DIR",
              help="How blocks become summary rows (see generate --help) [default: auto].")
@click.option("--segments", type=click.IntRange(min=1), default=4, show_default=True,
              help="Segments of the text, each of the model's context length, streamed one after another.")
@click.option("--tokens", type=click.IntRange(min=16), default=None, help="Stream at most this many tokens per segment.")
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object (last line).")
def fold(path, synthetic, window, budget, fold_block, fold_compressor, segments, tokens, model, dtype, device,
         trust_remote_code, as_json):
    """Perplexity: full attention vs window only vs window + automatic fold, at equal rows."""
    from heedful.app.open import fold_compressor_for, session_for
    from heedful.models.loading import load_model

    if window >= budget:
        raise HeedfulError(f"--window {window} must be smaller than --budget {budget} (the rest holds summaries)")
    if (path is None) == (synthetic is None):
        raise click.UsageError("give --text FILE or --synthetic stories|drills (one of them)")
    lm = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    if synthetic is not None:
        import random

        from heedful.train.compressor import EVAL_SEED, synthetic_text
        from heedful.train.synthetic import copy_drill, story

        rng = random.Random(EVAL_SEED)  # not a training seed: held-out text
        if synthetic == "mix":
            text = synthetic_text(EVAL_SEED, 1000 * segments)
        else:
            text = "\n".join(story(rng) if synthetic == "stories" else copy_drill(rng) for _ in range(40 * segments))
        path = f"synthetic {synthetic} (seed {EVAL_SEED})"
    else:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    ids = lm.tokenizer(text, verbose=False)["input_ids"]  # cut into segments below
    limit = getattr(lm.model.config.get_text_config(decoder=True), "max_position_embeddings", None) or len(ids)
    size = min(limit - 1, tokens or limit)
    pieces = [ids[i: i + size] for i in range(0, len(ids), size)][:segments]
    pieces = [p for p in pieces if len(p) > 1]
    if not pieces:
        raise HeedfulError(f"{path}: too short (fewer than 2 tokens)")
    compressor = fold_compressor_for(lm, fold_compressor, fold_block)
    # no sinks in any run (ungated models too): the window-only run holds B tokens, as the
    # compressor's training pattern does
    fold_run = dict(window=window, budget=budget, fold_budget=budget - window, fold_block=fold_block, sinks=0)
    runs = {"full": dict(window=size, budget=size + 1, sinks=0),
            "window": dict(window=budget, budget=budget, sinks=0),
            "fold": dict(fold_run, fold_compressor=compressor)}
    if compressor != "mean":
        runs["fold_mean"] = dict(fold_run, fold_compressor="mean")
    session_for(lm, **runs["fold"])  # a bad compressor is refused before any run
    figures, seconds = {}, {}
    count = sum(len(p) - 1 for p in pieces)
    for name, settings in runs.items():
        t0, total = time.perf_counter(), 0.0
        with click.progressbar(length=count, label=f"{name:<9}", file=sys.stderr) as bar:
            for piece in pieces:
                s = session_for(lm, prefill_chunk=1, **settings)
                total += stream_nll(s, piece, bar) * (len(piece) - 1)
        seconds[name] = round(time.perf_counter() - t0, 1)
        figures[name] = round(math.exp(total / count), 3)
    gap = figures["window"] - figures["full"]

    def closed(name):
        return round((figures["window"] - figures[name]) / gap, 3) if gap > 0 and name in figures else None

    result = {"ppl": figures, "tokens": count + len(pieces), "segments": len(pieces), "window": window,
              "budget": budget, "fold_block": fold_block, "fold_compressor": compressor,
              "gap_closed": closed("fold"), "gap_closed_mean": closed("fold_mean") if compressor != "mean"
              else closed("fold"), "seconds": seconds, "model": lm.name, "text": str(path)}
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['tokens']} tokens of {path} in {len(pieces)} segments; model {lm.name}; budget {budget} rows")
    click.echo(f"full attention          ppl {figures['full']:.3f}")
    click.echo(f"window {budget:<5} only       ppl {figures['window']:.3f}")
    label = "mean" if compressor == "mean" else "learned"
    click.echo(f"window {window:<5} + fold     ppl {figures['fold']:.3f}  ({budget - window} summaries of "
               f"{fold_block} tokens, {label})")
    if "fold_mean" in figures:
        click.echo(f"window {window:<5} + fold     ppl {figures['fold_mean']:.3f}  (mean pooling)")
    if result["gap_closed"] is not None:
        click.echo(f"fold closes {result['gap_closed']:.0%} of the gap between window only and full attention")
