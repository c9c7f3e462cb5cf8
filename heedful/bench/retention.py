"""`heedful bench retention`: recall accuracy under a KV budget, policy by policy.

Episodes: facts, filler longer than the window, a question whose answer must be copied from
the facts (the held-out recall episodes of the training corpus, regenerated). Each episode
runs through the real session engine, per policy and budget:
full attention (upper bound), window only, sinks + window (StreamingLLM), heavy hitters
(H2O: the most attended tokens), NSA-style block top-k, human pins (the facts pinned as a
person or a replay script would), pins + top-k. Run on the embedded gated model and, with
--twin, its ungated twin (not shipped: `heedful train --ungated` rebuilds it). Prints a
table and writes a PNG: accuracy vs budget, one line per policy, one panel per model.
"""

from __future__ import annotations

import json
import sys

import click

from heedful.app.options import model_options


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated integers") from None


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    for ax, res in zip(axes[0], results):
        budgets = res["budgets"]
        for policy, accs in res["accuracy"].items():
            ax.plot(budgets, [accs[str(b)] for b in budgets], marker="o", label=policy,
                    linestyle="--" if policy == "full" else "-")
        ax.set_title(f"{res['label']} ({'gated' if res['gated'] else 'ungated'}), {res['episodes']} episodes")
        ax.set_xlabel("KV budget (rows per layer)")
        ax.set_ylabel("recall accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@click.command()
@click.option("--twin", default=None, metavar="DIR", help="The ungated twin, to compare (heedful train --ungated).")
@click.option("--budgets", default="32,48,64,96", show_default=True, help="KV budgets, comma-separated.")
@click.option("--episodes", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--filler", type=click.IntRange(min=0), default=10, show_default=True,
              help="Filler sentences between the facts and the question.")
@click.option("--policies", default="full,window,sinks+window,h2o,topk,pins,pins+topk", show_default=True)
@click.option("--png", default="retention.png", show_default=True, type=click.Path(dir_okay=False),
              help="Where to write the plot.")
@click.option("--json", "as_json", is_flag=True, help="Also print the results as JSON.")
@model_options
def retention(twin, budgets, episodes, filler, policies, png, as_json, model, dtype, device, trust_remote_code):
    """Recall accuracy under a KV budget for each retention policy (table + PNG)."""
    import torch

    from heedful.models.loading import load_model
    from heedful.train.retention import POLICIES, heldout_episodes, run_episode

    chosen = [p.strip() for p in policies.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in POLICIES]
    if unknown:
        raise click.BadParameter(f"unknown policies {unknown} (known: {', '.join(POLICIES)})", param_hint="--policies")
    bs = _ints(budgets)
    eps = heldout_episodes(episodes, n_filler=filler)
    runs = [(model, "default" if model is None else model)] + ([(twin, twin)] if twin else [])
    results = []
    for name, label in runs:
        lm = load_model(name, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        torch.manual_seed(0)
        acc: dict[str, dict[str, float]] = {}
        total = len(chosen) * len(bs) * len(eps)
        with click.progressbar(length=total, label=f"{label}", file=sys.stderr) as bar:
            for policy in chosen:
                acc[policy] = {}
                for b in bs:
                    hits = 0
                    for ep in eps:
                        try:
                            ok, _ = run_episode(lm.model, lm.tokenizer, ep, policy, b, lm.gated)
                        except Exception:  # a pin the budget cannot hold: a miss, as for a person
                            ok = False
                        hits += ok
                        bar.update(1)
                    acc[policy][str(b)] = hits / len(eps)
        results.append({"label": label, "gated": lm.gated, "episodes": len(eps), "budgets": bs, "accuracy": acc})
    for res in results:
        click.echo(f"\n{res['label']} ({'gated' if res['gated'] else 'ungated'}): recall accuracy, "
                   f"{res['episodes']} episodes, filler {filler} sentences")
        click.echo(f"{'policy':<14}" + "".join(f"{'B=' + str(b):>8}" for b in bs))
        for policy, accs in res["accuracy"].items():
            click.echo(f"{policy:<14}" + "".join(f"{accs[str(b)]:>8.2f}" for b in bs))
        full = res["accuracy"].get("full")
        pins = res["accuracy"].get("pins")
        if full and pins:
            for b in bs:
                if full[str(b)]:
                    click.echo(f"pins at B={b}: {pins[str(b)] / full[str(b)]:.0%} of full attention's accuracy")
    plot(results, png)
    click.echo(f"plot: {png}")
    if as_json:
        click.echo(json.dumps(results))
