"""heedful's policies on one episode of `heedful bench tasks`, through the real session engine.

Every policy streams the same tokens: the episode's pieces one prompt each, inside the
model's chat template exactly as kvpress's pipeline builds it (one user turn: the context,
then the question, then the answer prefix after the assistant's header), or, for a
conversation, one `Session.say` per turn; then a greedy answer (stopping at the end of the
turn). A prefill chunk is at most `chunk` tokens, so a token's rows only ever see what was
retained when it was processed. Rows are per layer (`budget`), the same number for every
policy but full attention:

- full: a budget that holds everything (the upper bound);
- window: the last `rows` tokens; sinks+window (StreamingLLM, Xiao et al., 2023): 4 sinks;
- h2o (Zhang et al., 2023): half the rows the window, half the most attended tokens (it
  sees the last query of each prefill chunk and every generated token);
- topk: NSA-style block top-k over the credit pool (half the rows the window);
- pins: the scripted person pins what each piece's "pin" names as the piece streams in
  (`prompt(text, pin=...)`), the window gets the rest; a pin the rows cannot hold is not
  made (as for a person, the engine refuses it);
- learned: a picker of `heedful learn` auto-pins while the text streams (learned.py), window
  rows // 4;
- autofold: half the rows the window, half automatic fold summaries of 16-token blocks;
- pins+fold: the person's pins, the rest half window, half fold summaries.
"""

from __future__ import annotations

import time

from heedful.bench.tasks.tasks import score

POLICIES = ["full", "window", "sinks+window", "h2o", "topk", "pins", "learned", "autofold", "pins+fold"]
FOLD_BLOCK = 16


def template_parts(tokenizer) -> tuple[str, str]:
    """What kvpress's pipeline puts around the context: the chat template's text before the
    user's content and after it (the end of the turn and the assistant's header)."""
    sep = "#" * 40
    text = tokenizer.apply_chat_template([{"role": "user", "content": "CONTEXT" + sep}], add_generation_prompt=True,
                                         tokenize=False)
    head, tail = text.split(sep)
    return head[: -len("CONTEXT")], tail


def chat_texts(ep: dict, tokenizer) -> tuple[list[tuple[str, list[str]]], str]:
    """A conversation rendered by the chat template, turn by turn (each turn's text, what the
    person pins in it), and the question's turn with the assistant's header after it."""
    msgs, prev, out = [], "", []
    for t in ep["turns"]:
        msgs.append({"role": t["role"], "content": t["text"]})
        full = tokenizer.apply_chat_template(msgs, tokenize=False)
        out.append((full[len(prev):], t["pin"]))
        prev = full
    last = tokenizer.apply_chat_template(msgs + [{"role": "user", "content": ep["question"]}], tokenize=False,
                                         add_generation_prompt=True)
    return out, last[len(prev):]


def stream_texts(ep: dict, tokenizer) -> tuple[list[tuple[str, list[str]]], str]:
    """The prompts of an episode: [(text, pins)] of the context, and the question's text."""
    if ep["kind"] == "chat":
        return chat_texts(ep, tokenizer)
    head, tail = template_parts(tokenizer)
    pieces = [(p["text"], p["pin"]) for p in ep["pieces"]]
    pieces[0] = (head + pieces[0][0], pieces[0][1])
    return pieces, ep["question"] + tail + ep["answer_prefix"]


def pinned_rows(tok, ep: dict) -> int:
    pins = [x for p in (ep.get("pieces") or ep.get("turns")) for x in p["pin"]]
    return sum(len(tok(" " + x, add_special_tokens=False)["input_ids"]) + 1 for x in pins)


def max_positions(model) -> int | None:
    cfg = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    return getattr(cfg, "max_position_embeddings", None)


def settings(policy: str, rows: int, pinned: int, total: int, chunk: int, limit: int | None = None) -> dict:
    """Session settings of a policy at `rows` KV rows per layer (total: the stream's length;
    limit: the model's positions)."""
    if policy == "full":
        b = min(total + 256, limit or total + 256)
        return dict(budget=b, window=b, sinks=0, prefill_chunk=512)
    s = dict(budget=rows, window=rows, sinks=0, prefill_chunk=max(8, min(chunk, rows // 2)))
    if policy == "sinks+window":
        s.update(sinks=4, window=rows - 4)
    elif policy == "h2o":
        s.update(window=rows // 2)
    elif policy == "topk":
        s.update(auto_topk=2, block_size=8, window=rows // 2)
    elif policy == "pins":
        s.update(window=max(4, rows - pinned))
    elif policy == "learned":
        s.update(window=max(8, rows // 4))
    elif policy == "autofold":
        s.update(window=rows // 2, fold_budget=rows - rows // 2, fold_block=FOLD_BLOCK, fold_compressor="mean")
    elif policy == "pins+fold":
        rest = max(8, rows - pinned)
        s.update(window=max(4, rest // 2), fold_budget=max(0, rest - max(4, rest // 2)), fold_block=FOLD_BLOCK,
                 fold_compressor="mean")
        if s["fold_budget"] < 2:
            s.update(fold_budget=0)
    s["prefill_chunk"] = min(s["prefill_chunk"], s["window"])
    return s


def run(lm, ep: dict, policy: str, rows: int, picker=None, chunk: int = 64) -> dict:
    """One episode under one policy: {"policy", "rows", "score", "answer", "gen_seconds",
    "gen_tokens", "stream"} (rows is None for full attention)."""
    from heedful.errors import BudgetError
    from heedful.selector.session import Session
    from heedful.train.h2o import HeavyHitterPolicy

    tok = lm.tokenizer
    pieces, question = stream_texts(ep, tok)
    total = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t, _ in pieces) + 64
    cfg = settings(policy, rows, pinned_rows(tok, ep), total, chunk, max_positions(lm.model))
    own = HeavyHitterPolicy(cfg["window"], cfg["budget"], 0) if policy == "h2o" else None
    s = Session(lm.model, tok, gated=lm.gated, policy=own, temperature=0, seed=0, **cfg)
    person = policy in ("pins", "pins+fold")
    pinner = None
    if policy == "learned":
        from heedful.learn.autopin import AutoPinner

        pinner = AutoPinner(picker, lm.model)
    try:
        say = ep["kind"] == "chat" and pinner is None
        for (text, pins), turn in zip(pieces, ep.get("turns") or [None] * len(pieces)):
            if pinner is not None:
                pinner.prompt(s, text)
                continue
            pin = pins if person else ()
            try:
                if say:
                    s.say(turn["text"], role=turn["role"], pin=pin)
                else:
                    s.prompt(text, pin=pin)
            except BudgetError:  # the rows cannot hold the pin: the person could not make it
                if say:
                    s.say(turn["text"], role=turn["role"])
                else:
                    s.prompt(text)
        if pinner is not None:
            pinner.prompt(s, question)
        elif say:
            s.say(ep["question"])
        else:
            s.prompt(question)
        t0 = time.perf_counter()
        ids = [t.id for t in s.generate(ep["max_new"], stop_at_eos=True)]
        seconds = time.perf_counter() - t0
    finally:
        if pinner is not None:
            pinner.close()
    answer = tok.decode(ids, skip_special_tokens=True)
    return {"policy": policy, "rows": None if policy == "full" else rows, "score": score(answer, ep["answers"]),
            "answer": answer.strip()[:200], "gen_seconds": seconds, "gen_tokens": len(ids), "stream": len(s),
            "pins": len(s.pins())}
