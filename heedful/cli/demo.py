"""`heedful demo`: the point of heedful in one command. The same facts, filler, question and
KV budget, answered three ways side by side: with the facts pinned, with the recent window
only, and with full attention (no budget). The episodes are the held-out recall episodes of
`heedful bench retention`, which measures the same thing over more episodes and policies."""

from __future__ import annotations

import json
import textwrap

import click

from heedful.app.options import model_options

RUNS = (("pins", "facts pinned"), ("window", "window only"), ("full", "full attention"))


@click.command()
@click.option("--episodes", type=click.IntRange(1, 1000), default=5, show_default=True, help="Episodes shown.")
@click.option("--budget", type=click.IntRange(16, 4096), default=64, show_default=True,
              help="KV rows per layer for the pinned and window-only runs.")
@click.option("--filler", type=click.IntRange(0, 100), default=10, show_default=True,
              help="Filler sentences between the facts and the question (10 outlast a budget of 64).")
@model_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per episode, then a summary.")
def demo(episodes, budget, filler, model, dtype, device, trust_remote_code, as_json):
    """Facts, filler, a question: the answer with the facts pinned vs the window alone."""
    from heedful.models.loading import load_model
    from heedful.train.retention import heldout_episodes, run_episode

    lm = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    if not as_json:
        click.echo(f"model: {lm.name} ({'gated' if lm.gated else 'ungated'}); KV budget {budget} rows per layer "
                   f"for the pinned and window-only runs\n")
    score = {p: 0 for p, _ in RUNS}
    for k, ep in enumerate(heldout_episodes(episodes, n_filler=filler), 1):
        answers = {}
        for policy, _ in RUNS:
            ok, out = run_episode(lm.model, lm.tokenizer, ep, policy, budget, lm.gated)
            answers[policy] = (ok, out)
            score[policy] += ok
        n_tokens = len(lm.tokenizer(ep["prompt"])["input_ids"])
        if as_json:
            click.echo(json.dumps({"episode": k, "facts": ep["facts"], "question": ep["question"],
                                   "answer": ep["answer"], "prompt_tokens": n_tokens,
                                   **{p: {"correct": ok, "output": out} for p, (ok, out) in answers.items()}}))
            continue
        click.echo(f"episode {k}: {n_tokens} tokens of context")
        click.echo(textwrap.fill("facts: " + " ".join(ep["facts"]), 96, subsequent_indent="       "))
        click.echo(f"then {filler} filler sentences, then: {ep['question']}  (answer: {ep['answer']})")
        for policy, label in RUNS:
            ok, out = answers[policy]
            shown = out.split("<|endoftext|>")[0].split("\n")[0].strip() or repr(out)
            click.echo(f"  {label:<15} {'right' if ok else 'wrong':<6} {shown[:60]}")
        click.echo("")
    summary = {p: score[p] / episodes for p, _ in RUNS}
    if as_json:
        click.echo(json.dumps({"event": "summary", "episodes": episodes, "budget": budget, "accuracy": summary}))
        return
    click.echo(f"over {episodes} episodes: " + ", ".join(f"{label} {score[p]}/{episodes}" for p, label in RUNS))
    click.echo("more episodes, budgets and policies: heedful bench retention (plot: docs/retention.png)")
