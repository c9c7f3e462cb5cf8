"""`heedful bench chat`: does a fact given in turn 1 survive a long conversation at a KV budget?

Each scripted conversation: turn 1, the person gives a fact ("Please remember: my locker code
is 4721."), the assistant acknowledges; then TURNS exchanges of chatter (a question and a
short scripted answer, drawn from a fixed pool with the conversation's seed); then the person
asks for the fact, and the model answers greedily through the engine. Every turn goes
through the chat template (Session.say), so the markup and every turn are in the stream and
the window slides over all of it. The answer is right when it contains the code (as a
number of its own: 32011 does not count for 3201).

Policies, at the same KV budget (rows per layer): full attention (a budget that holds it
all), window only, sinks + window (StreamingLLM, 4 sinks), and three pins that measure
what a pin should hold in a conversation: the code's tokens alone (pin-fact), the turn's
content, the sentence that says it (pin-content), and the whole turn with its markup
(pin-turn). The pins keep the model's own sinks (4 on an ungated model, none on a gated
one) and leave 48 rows for what is pinned; the rest is the window.
"""

from __future__ import annotations

import json
import random
import re
import sys
import time

import click

from heedful.app.options import model_options

CHATTER = [
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("Name a fruit that is yellow.", "A banana is yellow."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What colour is the sky on a clear day?", "It is blue."),
    ("What do bees make?", "Bees make honey."),
    ("Which planet is known as the red planet?", "Mars is the red planet."),
    ("What is two plus three?", "Two plus three is five."),
    ("What do you call a baby cat?", "A baby cat is a kitten."),
    ("Which season comes after winter?", "Spring comes after winter."),
    ("What is frozen water called?", "Frozen water is ice."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("What animal barks?", "A dog barks."),
    ("What is the capital of Italy?", "Rome is the capital of Italy."),
    ("What do plants need from the sun?", "Plants need sunlight."),
    ("Which is bigger, a mouse or an elephant?", "An elephant is bigger."),
    ("What do we use to write on paper?", "We use a pen or a pencil."),
]

POLICIES = ("full", "window", "sinks+window", "pin-fact", "pin-content", "pin-turn")


def conversation(seed: int, turns: int) -> dict:
    rng = random.Random(seed)
    code = str(rng.randint(1000, 9999))
    chatter = [CHATTER[rng.randrange(len(CHATTER))] for _ in range(turns)]
    return {"code": code, "fact": f"Please remember: my locker code is {code}.", "chatter": chatter,
            "question": "What is my locker code? Answer with the number only."}


def settings(policy: str, budget: int, total: int, pin_rows: int = 48) -> tuple[dict, object]:
    """Session settings and the pin targets of turn 1 for a policy."""
    if policy == "full":
        b = max(budget, total + 64)
        return {"window": b, "budget": b, "sinks": 0}, ()
    if policy == "window":
        return {"window": budget, "budget": budget, "sinks": 0}, ()
    if policy == "sinks+window":
        return {"window": budget - 4, "budget": budget, "sinks": 4}, ()
    # the pins: the model's own sinks (4 on an ungated model, none on a gated one) and rows
    # kept for what is pinned; the rest is the window
    return {"window": budget - pin_rows, "budget": budget, "sinks": None}, None


def run_conversation(lm, conv: dict, policy: str, budget: int, answer_tokens: int = 12, pin_rows: int = 48) -> dict:
    from heedful.selector.recorder import NullRecorder
    from heedful.selector.session import Session, SessionConfig

    tok = lm.tokenizer
    # a generous bound on the conversation's tokens (full attention evicts nothing), within the
    # model's positions
    total = 128 * (len(conv["chatter"]) + 2)
    limit = getattr(lm.model.config.get_text_config(), "max_position_embeddings", None)
    total = min(total, limit - 64) if limit else total
    cfg, _ = settings(policy, budget, total, pin_rows)
    s = Session(lm.model, tok, config=SessionConfig(model="bench", temperature=0, **cfg), recorder=NullRecorder(),
                gated=lm.gated)
    pin = {"pin-fact": [conv["code"]], "pin-content": [conv["fact"]]}.get(policy, ())
    turn = s.say(conv["fact"], pin=pin)
    if policy == "pin-turn":  # the whole turn: its markup and its content
        s.pin((turn.start, turn.stop))
    s.say("Got it, I will remember that.", role="assistant")
    for q, a in conv["chatter"]:
        s.say(q)
        s.say(a, role="assistant")
    s.say(conv["question"])
    t0 = time.perf_counter()
    ids = [t.id for t in s.generate(answer_tokens, stop_at_eos=True)]
    answer = tok.decode(ids, skip_special_tokens=True).strip()
    right = re.search(rf"(?<!\d){conv['code']}(?!\d)", answer) is not None  # 32011 is not 3201
    return {"policy": policy, "right": right, "answer": answer, "tokens": len(s), "resident": len(s.retained()),
            "seconds": time.perf_counter() - t0}


@click.command()
@click.option("--conversations", type=click.IntRange(min=1), default=20, show_default=True,
              help="Scripted conversations (one seed each).")
@click.option("--turns", type=click.IntRange(min=1), default=30, show_default=True,
              help="Exchanges of chatter between the fact and the question.")
@click.option("--budget", type=click.IntRange(min=40), default=256, show_default=True,
              help="KV rows per layer for every policy but full attention.")
@click.option("--pin-rows", type=click.IntRange(min=1), default=48, show_default=True,
              help="Rows of the budget left for what the pin policies pin (and the sinks); the rest is the window.")
@click.option("--policies", default=",".join(POLICIES), show_default=True, help="Comma-separated policies.")
@click.option("--seed", type=int, default=0, show_default=True, help="First conversation's seed.")
@click.option("--json", "as_json", is_flag=True, help="Every answer as a JSON line, then the summary.")
@model_options
def chat(conversations, turns, budget, pin_rows, policies, seed, as_json, model, dtype, device, trust_remote_code):
    """A fact from turn 1 asked after TURNS exchanges, at a KV budget: accuracy by policy.

    Needs a model with a chat template (default: -m smollm2 if installed)."""
    from heedful.errors import HeedfulError
    from heedful.models.loading import load_model

    if pin_rows >= budget:
        raise click.BadParameter(f"{pin_rows} leaves no window in a budget of {budget}", param_hint="--pin-rows")
    chosen = [p.strip() for p in policies.split(",") if p.strip()]
    bad = [p for p in chosen if p not in POLICIES]
    if bad or not chosen:
        raise click.BadParameter(f"unknown policy {', '.join(bad) or '(none)'}; choose from {', '.join(POLICIES)}",
                                 param_hint="--policies")
    lm = load_model(model or "smollm2", dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    if not getattr(lm.tokenizer, "chat_template", None):
        raise HeedfulError(f"--model {lm.name}: has no chat template (bench chat talks in turns)")
    right = {p: 0 for p in chosen}
    t0 = time.perf_counter()
    with click.progressbar(length=conversations * len(chosen), label="conversations", file=sys.stderr) as bar:
        for k in range(conversations):
            conv = conversation(seed + k, turns)
            for p in chosen:
                r = run_conversation(lm, conv, p, budget, pin_rows=pin_rows)
                right[p] += r["right"]
                if as_json:
                    click.echo(json.dumps({"conversation": seed + k, **r}))
                bar.update(1)
    summary = {"model": lm.name, "conversations": conversations, "turns": turns, "budget": budget,
               "accuracy": {p: right[p] / conversations for p in chosen},
               "seconds": round(time.perf_counter() - t0, 1)}
    if not as_json:
        click.echo(f"{lm.name}: {conversations} conversation(s): the fact, {turns} exchange(s) of chatter, the "
                   f"question; KV budget {budget}")
        for p in chosen:
            click.echo(f"  {p:<13} {right[p]:>3}/{conversations}  {right[p] / conversations:.2f}")
    click.echo(json.dumps(summary))
