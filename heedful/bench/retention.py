"""`heedful bench retention`: recall accuracy under a KV budget, policy by policy.

Episodes: facts, filler longer than the window, a question whose answer must be copied from
the facts (the held-out recall episodes of the training corpus, regenerated). Each episode
runs through the real session engine, per policy and budget:
full attention (upper bound), window only, sinks + window (StreamingLLM), heavy hitters
(H2O: the most attended tokens), NSA-style block top-k, human pins (the facts pinned as a
person or a replay script would), pins + top-k; top-k's pool and scoring can be named,
"topk-fifo-fla", "pins+topk-credit" (heedful.train.retention.auto_variant; plain "topk" runs
the session's defaults). Run on the embedded gated model and, with
--twin, its ungated twin (not shipped: `heedful train --ungated` rebuilds it). Prints a
table and writes a PNG: accuracy vs budget, one line per policy, one panel per model.

--episodes-file FILE.jsonl (lines {"text", "facts", "question", "answer"}, the facts
substrings of the text in any order) and --picker DIR (the policy "learned": a picker of
`heedful learn` auto-pins while the text streams) run every policy on streamed text
(`run_text_episode`): the text arrives a few words at a time, "pins" pins each fact as soon
as it has streamed in, "learned" pins what the picker scores high (window budget // 4, the
rest of the budget for its pins, the oldest leaving first), then the question is asked.
--adapter DIR loads a peft LoRA adapter over the model.
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
@click.option("--episodes-file", default=None, type=click.Path(dir_okay=False), metavar="FILE.jsonl",
              help='Episodes to stream: lines {"text", "facts": [...], "question", "answer"} (first --episodes).')
@click.option("--picker", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="A picker of `heedful learn`: adds the policy learned (auto-pins while the text streams).")
@click.option("--adapter", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="A peft LoRA adapter loaded over the model (not the twin).")
@model_options
def retention(twin, budgets, episodes, filler, policies, png, as_json, episodes_file, picker, adapter, model, dtype,
              device, trust_remote_code):
    """Recall accuracy under a KV budget for each retention policy (table + PNG)."""
    import torch

    from heedful.app.open import fold_compressor_for
    from heedful.errors import HeedfulError
    from heedful.models.loading import load_model
    from heedful.train.retention import AUTOFOLD_BLOCK, POLICIES, heldout_episodes, is_policy, run_episode

    known = POLICIES + ["learned"]
    chosen = [p.strip() for p in policies.split(",") if p.strip()]
    unknown = [p for p in chosen if p != "learned" and not is_policy(p)]
    if unknown:
        raise click.BadParameter(f"unknown policies {unknown} (known: {', '.join(known)}; top-k variants: "
                                 f"topk or pins+topk, then -fifo/-credit and/or -minmax/-mean/-fla)",
                                 param_hint="--policies")
    if picker and "learned" not in chosen:
        chosen.append("learned")
    if "learned" in chosen and not picker:
        raise click.BadParameter("the policy learned needs --picker DIR", param_hint="--policies")
    bs = _ints(budgets)
    streamed = bool(episodes_file or picker)
    if episodes_file:
        from heedful.learn.episodes import read_episodes_file

        eps = read_episodes_file(episodes_file)[:episodes]
    else:
        eps = heldout_episodes(episodes, n_filler=filler)
        if streamed:
            eps = [{"text": "Facts: " + " ".join(e["facts"]) + "\n" + e["filler"] + "\n", **e} for e in eps]
    runs = [(model, "default" if model is None else model)] + ([(twin, twin)] if twin else [])
    results = []
    for name, label in runs:
        extra = {"adapter": adapter} if adapter and name is model else {}
        lm = load_model(name, dtype=dtype, device=device, trust_remote_code=trust_remote_code, **extra)
        pk = None
        if picker and name is model:
            from heedful.learn.picker import Picker

            pk = Picker.load(picker, lm)
        if adapter and name is model:
            label += f" + adapter {adapter}"
        compressor = fold_compressor_for(lm, None, AUTOFOLD_BLOCK)  # the model's own, for "autofold"
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
                            if policy == "learned" and pk is None:
                                ok = False  # the twin has no picker
                            elif streamed:
                                ok, _ = run_text_episode(lm.model, lm.tokenizer, ep, policy, b, lm.gated, pk)
                            else:
                                ok, _ = run_episode(lm.model, lm.tokenizer, ep, policy, b, lm.gated,
                                                    fold_compressor=compressor)
                        except HeedfulError:  # a pin the budget cannot hold: a miss, as for a person
                            ok = False
                        hits += ok
                        bar.update(1)
                    acc[policy][str(b)] = hits / len(eps)
        results.append({"label": label, "gated": lm.gated, "episodes": len(eps), "budgets": bs, "accuracy": acc,
                        **({"streamed": True} if streamed else {})})
    for res in results:
        what = f"episodes of {episodes_file}, streamed" if episodes_file else f"filler {filler} sentences"
        click.echo(f"\n{res['label']} ({'gated' if res['gated'] else 'ungated'}): recall accuracy, "
                   f"{res['episodes']} episodes, {what}")
        width = max([14, *(len(p) + 2 for p in res["accuracy"])])
        click.echo(f"{'policy':<{width}}" + "".join(f"{'B=' + str(b):>8}" for b in bs))
        for policy, accs in res["accuracy"].items():
            click.echo(f"{policy:<{width}}" + "".join(f"{accs[str(b)]:>8.2f}" for b in bs))
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


def _pieces(text: str, words: int = 6) -> list[str]:
    """The text in pieces of a few words (each piece keeps the whitespace before its words)."""
    import re

    parts = re.findall(r"\s*\S+", text)
    tail = text[len("".join(parts)):]
    out = ["".join(parts[k:k + words]) for k in range(0, len(parts), words)]
    if tail:
        out[-1:] = [(out[-1] if out else "") + tail]
    return out


def run_text_episode(model, tok, ep: dict, policy: str, budget: int, gated: bool, picker=None, chunk: int = 16,
                     max_new: int = 8) -> tuple[bool, str]:
    """One episode of an --episodes-file, streamed a few words at a time through a Session
    (see the module's docstring); the settings per policy are run_episode's."""
    from heedful.train.evaluate import answer_correct
    from heedful.train.retention import policy_session

    s = policy_session(model, tok, ep, policy, budget, gated, chunk)
    pinner = None
    if policy == "learned":
        from heedful.learn.autopin import AutoPinner

        pinner = AutoPinner(picker, model)
    text = ep["text"]
    ends = sorted((text.index(f) + len(f), f) for f in ep["facts"])
    streamed, k = 0, 0
    for piece in _pieces(text):
        if pinner:
            pinner.prompt(s, piece)
        else:
            s.prompt(piece)
        streamed += len(piece)
        while policy.startswith("pins") and k < len(ends) and ends[k][0] <= streamed:
            s.pin(ends[k][1])  # as soon as the fact has streamed in
            k += 1
    if policy.startswith("recall"):
        for f in ep["facts"]:
            s.recall(f, append=policy == "recall-append")
    q = ("" if text[-1:].isspace() else "\n") + "Question: " + ep["question"] + "\nAnswer:"
    if pinner:
        pinner.prompt(s, q)
    else:
        s.prompt(q)
    out = "".join(t.text for t in s.generate(max_new))
    if pinner:
        pinner.close()
    return answer_correct(out, ep["answer"]), out
