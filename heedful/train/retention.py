"""Recall under a KV budget, through the real session engine: the episodes and policies of
`heedful bench retention` (heedful/bench/retention.py).

Each held-out recall episode is fed to a heedful Session in small prefill chunks (so a
token's KV rows only ever see what was retained when it was processed); then, per policy,
the facts are pinned or not, the question is prompted and the answer generated greedily and
scored with :func:`heedful.train.evaluate.answer_correct`.

Policies (budget B): full (no eviction), window (the last B tokens), sinks+window (4 sinks),
topk (NSA-style auto selection of blocks), pins (the facts pinned by "the person", the rest
of the budget is the window), pins+topk.

Auto selection's variants: "topk" and "pins+topk" run the session's defaults
(SessionConfig.auto_pool / auto_score); a suffix names the pool and the scoring,
"topk-fifo", "topk-credit-fla", "pins+topk-fifo-minmax" (pools: selector/policy.py POOLS,
scorings: SCORES).
"""

from __future__ import annotations

import random
import re

from heedful.selector.config import POOLS, SCORES
from heedful.selector.session import Session
from heedful.train.h2o import HeavyHitterPolicy
from heedful.train.evaluate import answer_correct
from heedful.train.synthetic import recall_episode

POLICIES = ["full", "window", "sinks+window", "h2o", "topk", "pins", "pins+topk", "recall", "recall-append", "fold",
            "autofold", "autofold-mean"]
# recall / recall-append: the person marks the facts late, after they were evicted (just
# before the question): re-encoded in place, or as a pinned copy at the end of the stream.
# fold: the facts pinned as they stream in, each filler sentence folded into its first two
# words as soon as it has streamed in (the person's gist), so the budget holds gists, not prose.
# autofold / autofold-mean: nobody marks anything; half the budget is the window, the other half
# automatic fold summaries of 16 tokens (the session's compressor, or the mean).
AUTOFOLD_BLOCK = 16


def auto_variant(policy: str) -> dict | None:
    """The auto-selection settings a policy name asks for ({} for the defaults), or None if
    the name is not a top-k policy: "topk" or "pins+topk", then "-POOL" and / or "-SCORE"."""
    for head in ("pins+topk", "topk"):
        if policy == head or policy.startswith(head + "-"):
            out = {}
            for part in policy[len(head):].split("-")[1:]:
                key = "auto_pool" if part in POOLS else "auto_score" if part in SCORES else None
                if key is None or key in out:
                    return None
                out[key] = part
            return out
    return None


def is_policy(name: str) -> bool:
    return name in POLICIES or auto_variant(name) is not None


def heldout_episodes(n: int, seed: int = 2, n_filler: int | None = 10) -> list[dict]:
    """The held-out recall episodes, regenerated (the corpus writes the same ones, seed 2, to
    recall_valid.jsonl); a fixed filler length makes the filler outlast small budgets."""
    rng = random.Random(seed)
    return [recall_episode(rng, n_filler=n_filler).to_dict() for _ in range(n)]


def policy_session(model, tok, ep: dict, policy: str, budget: int, gated: bool, chunk: int = 16,
                   reserve: int = 0, fold_compressor: str = "mean"):
    """A Session with the settings a policy runs under: its budget, sinks, window and auto
    selection; with pins (pins, recall, fold) the window gets what the facts' pins and
    `reserve` other fixed rows (a fold's gists) leave of the budget; H2O's policy;
    automatic fold's rows and compressor ("autofold": `fold_compressor`)."""
    settings = dict(prefill_chunk=chunk, seed=0)
    n_ctx = getattr(model.config, "max_position_embeddings", 256)
    if policy == "full":
        settings.update(budget=n_ctx, window=n_ctx, sinks=0)
    else:
        sinks = 4 if policy == "sinks+window" else 0
        settings.update(budget=budget, sinks=sinks, window=budget - sinks)
        if policy == "h2o":  # one-token chunks: the policy sees every query's attention
            settings.update(window=budget // 2, prefill_chunk=1)
        elif auto_variant(policy) is not None:
            settings.update(auto_topk=2, block_size=8, window=budget // 2, **auto_variant(policy))
        elif policy == "learned":  # the picker's pins take the rest of the budget
            settings.update(window=max(8, budget // 4))
        elif policy.startswith("autofold"):
            settings.update(window=budget // 2, fold_budget=budget - budget // 2, fold_block=AUTOFOLD_BLOCK,
                            fold_compressor="mean" if policy == "autofold-mean" else fold_compressor)
    if policy.startswith(("pins", "recall")) or policy == "fold":
        pinned = sum(len(tok(" " + f, add_special_tokens=False)["input_ids"]) + 1 for f in ep["facts"])
        settings["window"] = max(4, min(settings["window"], budget - pinned - reserve))
    own = None
    if policy == "h2o":
        sinks = settings.get("sinks") or 0
        own = HeavyHitterPolicy(settings["window"], settings["budget"], sinks)
    return Session(model, tok, gated=gated, policy=own, **settings)


def run_episode(model, tok, ep: dict, policy: str, budget: int, gated: bool, chunk: int = 16,
                max_new: int = 8, fold_compressor: str = "mean") -> tuple[bool, str]:
    sentences = [x for x in re.split(r"(?<=[.!?]) ", ep["filler"]) if x]
    gists = [" " + " ".join(x.split()[:2]) for x in sentences] if policy == "fold" else []
    rows = sum(len(tok(g, add_special_tokens=False)["input_ids"]) for g in gists)
    s = policy_session(model, tok, ep, policy, budget, gated, chunk, reserve=rows, fold_compressor=fold_compressor)
    context = "Facts: " + " ".join(ep["facts"]) + "\n" + ep["filler"] + "\n"
    if policy == "fold":
        s.prompt("Facts: " + " ".join(ep["facts"]), pin=list(ep["facts"]))
        s.prompt("\n")
        for sentence, gist in zip(sentences, gists):
            r = s.prompt(" " + sentence if s.text(len(s) - 1) != "\n" else sentence)
            resident = set(s.retained())  # a sentence longer than the window has left already
            if len(r) > len(tok(gist, add_special_tokens=False)["input_ids"]) and all(t in resident for t in r):
                s.fold((r.start, r.stop), gist=gist)
        s.prompt("\n")
    elif policy.startswith("pins"):
        # pin while the facts are still resident: the person marks them as they stream in
        s.prompt("Facts: " + " ".join(ep["facts"]))
        for f in ep["facts"]:
            s.pin(f)
        s.prompt("\n" + ep["filler"] + "\n")
    else:
        s.prompt(context)
        if policy.startswith("recall"):
            for f in ep["facts"]:
                s.recall(f, append=policy == "recall-append")
    s.prompt("Question: " + ep["question"] + "\nAnswer:")
    out = "".join(t.text for t in s.generate(max_new))
    return answer_correct(out, ep["answer"]), out
