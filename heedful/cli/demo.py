"""`heedful demo`: the point of heedful in one command.

With a model that has a chat template (the real instruct model `smollm2`, the default where
it is installed): a conversation whose first turn gives a fact, then TURNS exchanges of
chatter, then the question, answered at one KV budget with the fact's sentence pinned, with
the window alone, with sinks + window (StreamingLLM) and with full attention (`heedful bench
chat` measures the same over more conversations). With a base model (the embedded gated
model, `-m default`): the held-out recall episodes of `heedful bench retention`, facts pinned
vs the window alone vs full attention."""

from __future__ import annotations

import json
import textwrap

import click

from heedful.app.options import model_options

RUNS = (("pins", "facts pinned"), ("window", "window only"), ("full", "full attention"))
CHAT_RUNS = (("pin-content", "fact pinned"), ("window", "window only"), ("sinks+window", "sinks + window"),
             ("full", "full attention"))


def default_demo_model(model: str | None) -> str | None:
    """No --model and no $HEEDFUL_MODEL: the real instruct model where it is installed."""
    import os

    from heedful.models.named import NAMED

    if model is None and not os.environ.get("HEEDFUL_MODEL") and NAMED["smollm2"].gguf_path() is not None:
        return "smollm2"
    return model


@click.command()
@click.option("--episodes", type=click.IntRange(1, 1000), default=None,
              help="Episodes (conversations) shown [default: 5; 3 with a chat model].")
@click.option("--budget", type=click.IntRange(16, 4096), default=None,
              help="KV rows per layer for the pinned and window-only runs [default: 64; 256 with a chat model].")
@click.option("--turns", type=click.IntRange(1, 500), default=30, show_default=True,
              help="A chat model: exchanges of chatter between the fact and the question.")
@click.option("--filler", type=click.IntRange(0, 100), default=10, show_default=True,
              help="Filler sentences between the facts and the question (10 outlast a budget of 64).")
@model_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per episode, then a summary.")
def demo(episodes, budget, turns, filler, model, dtype, device, trust_remote_code, as_json):
    """A fact, a long stretch, a question: answered with the fact pinned, the window alone, and more.

    Default model: smollm2 (a real instruct model, in a conversation) where it is installed,
    else the embedded gated model; -m default shows the embedded model's recall episodes."""
    from heedful.models.loading import load_model
    from heedful.selector.chat import has_template
    from heedful.train.retention import heldout_episodes, run_episode

    lm = load_model(default_demo_model(model), dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    if has_template(lm.tokenizer):
        return chat_demo(lm, episodes or 3, budget or 256, turns, as_json)
    episodes, budget = episodes or 5, budget or 64
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


def chat_demo(lm, conversations: int, budget: int, turns: int, as_json: bool) -> None:
    """The conversation form: bench chat's scripted conversations, shown one by one."""
    from heedful.bench.chat import conversation, run_conversation

    if not as_json:
        click.echo(f"model: {lm.name} ({'gated' if lm.gated else 'ungated'}, chat template); KV budget {budget} rows "
                   "per layer but for full attention\n")
    score = {p: 0 for p, _ in CHAT_RUNS}
    for k in range(conversations):
        conv = conversation(k, turns)
        runs = {p: run_conversation(lm, conv, p, budget) for p, _ in CHAT_RUNS}
        for p, r in runs.items():
            score[p] += r["right"]
        if as_json:
            click.echo(json.dumps({"episode": k + 1, "fact": conv["fact"], "question": conv["question"],
                                   "answer": conv["code"], "tokens": runs["full"]["tokens"],
                                   **{p: {"correct": r["right"], "output": r["answer"]} for p, r in runs.items()}}))
            continue
        click.echo(f"conversation {k + 1}: {turns + 2} turns, {runs['full']['tokens']} tokens")
        click.echo(f"  turn 1, user: {conv['fact']}   <- the pin")
        click.echo(f"  then {turns} exchanges of chatter, then: {conv['question']}")
        for p, label in CHAT_RUNS:
            r = runs[p]
            click.echo(f"    {label:<15} {'right' if r['right'] else 'wrong':<6} {r['answer'][:60]}")
        if runs["window"]["resident"] >= runs["window"]["tokens"]:
            click.echo(f"    (the conversation fits the budget of {budget}: nothing left the window; "
                       "raise --turns or lower --budget to see the difference)")
        click.echo("")
    summary = {p: score[p] / conversations for p, _ in CHAT_RUNS}
    if as_json:
        click.echo(json.dumps({"event": "summary", "episodes": conversations, "budget": budget, "turns": turns,
                               "accuracy": summary}))
        return
    click.echo(f"over {conversations} conversations: "
               + ", ".join(f"{label} {score[p]}/{conversations}" for p, label in CHAT_RUNS))
    click.echo("more conversations and what a pin should hold: heedful bench chat (docs/chat.md)")
