"""`heedful bench fold`: perplexity of a text streamed through the engine token by token
(teacher-forced, each token's rows computed under the policy in force), with full attention,
with the window alone at B rows, and with a window W plus automatic fold summaries at the
same B rows (selector/autofold.py). The last line is one JSON object with --json."""

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

    session._append_and_run(ids[:1], "prompt")
    total = 0.0
    for tid in ids[1:]:
        total -= float(torch.log_softmax(session.next_logits, -1)[tid])
        session._append_and_run([tid], "prompt")
        if bar is not None:
            bar.update(1)
    return total / max(1, len(ids) - 1)


@click.command()
@click.option("--text", "path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Plain text to stream (cut to the model's context length).")
@click.option("--synthetic", type=click.Choice(["stories", "drills"]), default=None,
              help="Instead of --text: held-out generated stories or copy drills (seeded, reproducible).")
@click.option("--window", type=click.IntRange(min=1), default=64, show_default=True, help="W of the fold run.")
@click.option("--budget", type=click.IntRange(min=2), default=128, show_default=True,
              help="KV rows for the window-only and the fold runs (the fold run keeps B - W summaries).")
@click.option("--fold-block", type=click.IntRange(min=1), default=16, show_default=True,
              help="Tokens pooled into one summary row.")
@click.option("--tokens", type=click.IntRange(min=16), default=None, help="Stream at most this many tokens.")
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object (last line).")
def fold(path, synthetic, window, budget, fold_block, tokens, model, dtype, device, trust_remote_code, as_json):
    """Perplexity: full attention vs window only vs window + automatic fold, at equal rows."""
    from heedful.app.open import session_for
    from heedful.models.loading import load_model

    if window >= budget:
        raise HeedfulError(f"--window {window} must be smaller than --budget {budget} (the rest holds summaries)")
    if (path is None) == (synthetic is None):
        raise click.UsageError("give --text FILE or --synthetic stories|drills (one of them)")
    lm = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    if synthetic is not None:
        import random

        from heedful.train.synthetic import copy_drill, story

        rng = random.Random(12345)  # not a training seed: held-out text
        text = "\n".join(story(rng) if synthetic == "stories" else copy_drill(rng) for _ in range(40))
        path = f"synthetic {synthetic} (seed 12345)"
    else:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    ids = lm.tokenizer(text)["input_ids"]
    limit = getattr(lm.model.config.get_text_config(decoder=True), "max_position_embeddings", None) or len(ids)
    ids = ids[: min(len(ids), limit - 1, tokens or len(ids))]
    runs = {"full": dict(window=len(ids), budget=len(ids) + 1, sinks=0),
            "window": dict(window=budget, budget=budget),
            "fold": dict(window=window, budget=budget, fold_budget=budget - window, fold_block=fold_block)}
    figures, seconds = {}, {}
    for name, settings in runs.items():
        s = session_for(lm, prefill_chunk=1, **settings)
        t0 = time.perf_counter()
        with click.progressbar(length=len(ids) - 1, label=f"{name:<7}", file=sys.stderr) as bar:
            nll = stream_nll(s, ids, bar)
        seconds[name] = round(time.perf_counter() - t0, 1)
        figures[name] = round(math.exp(nll), 3)
    gap = figures["window"] - figures["full"]
    closed = (figures["window"] - figures["fold"]) / gap if gap > 0 else None
    result = {"ppl": figures, "tokens": len(ids), "window": window, "budget": budget, "fold_block": fold_block,
              "gap_closed": None if closed is None else round(closed, 3), "seconds": seconds, "model": lm.name,
              "text": str(path)}
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{len(ids)} tokens of {path}; model {lm.name}; budget {budget} rows")
    click.echo(f"full attention        ppl {figures['full']:.3f}")
    click.echo(f"window {budget:<5} only     ppl {figures['window']:.3f}")
    click.echo(f"window {window:<5} + fold   ppl {figures['fold']:.3f}  ({budget - window} summaries of "
               f"{fold_block} tokens)")
    if closed is not None:
        click.echo(f"fold closes {closed:.0%} of the gap between window only and full attention")
