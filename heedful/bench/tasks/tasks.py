"""The episodes of `heedful bench tasks`, built from task definitions published by others.

Sources (by name; the templates below follow their published wording):

- RULER (Hsieh et al., 2024, "RULER: What's the Real Context Size of Your Long-Context
  Language Models?"): the needle-in-a-haystack family (NIAH single, multi-key, multi-value,
  multi-query) with its needle sentence ("One of the special magic numbers for {key} is:
  {value}."), its noise haystack ("The grass is green. The sky is blue. ..."), its question
  and answer prefix; variable tracking (VT: a chain of "VAR X = ..." assignments in noise,
  "find all variables that are assigned the value ..."). RULER's prose haystack is a set of
  essays; here the prose is the corpus' own (the licence-checked package descriptions that
  `heedful/train/corpus.py` reads), so nothing is downloaded.
- MT-Eval (Kwan et al., 2024, "MT-Eval: A Multi-Turn Capabilities Evaluation Benchmark for
  Large Language Models"), its recollection category: facts given in the first turns of a
  conversation, asked many turns later (here: scripted chatter between them, every turn
  through the chat template).

Scores follow RULER: the share of the expected answers found in the reply (string match,
"string_match_all"), so a multi-value episode that names 3 of 4 values scores 0.75.

An episode is a plain dict (JSON, so the peers' runner reads the very same ones):
{"task", "seed", "context", "kind": "text"|"chat", "pieces": [{"text", "pin": [...]}],
"question", "answer_prefix", "answers", "max_new"} for text; chat episodes carry "turns":
[{"role", "text", "pin": [...]}] instead of pieces. "pin" is what the scripted person pins
as the piece streams in (substrings of the piece).
"""

from __future__ import annotations

import random
import re
from functools import lru_cache

# RULER's noise haystack, repeated
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = "One of the special magic numbers for {key} is: {value}."
PREAMBLE = ("Some special magic numbers are hidden within the following text. Make sure to memorize it. "
            "I will quiz you about the numbers afterwards.\n")
VT_PREAMBLE = ("Memorize and track the chain(s) of variable assignment hidden in the following text.\n")
ADJS = ["copper", "silent", "amber", "hollow", "crimson", "gentle", "rapid", "frozen", "golden", "rustic", "lunar",
        "velvet", "bitter", "hidden", "marble", "nimble", "scarlet", "wooden", "electric", "ancient"]
NOUNS = ["candle", "harbor", "falcon", "meadow", "lantern", "quartz", "violin", "glacier", "compass", "orchard",
         "beacon", "saddle", "pepper", "canyon", "ribbon", "anchor", "thistle", "garnet", "kettle", "walrus"]
FAMILIES = {"niah_single": "RULER", "niah_multikey": "RULER", "niah_multivalue": "RULER",
            "niah_multiquery": "RULER", "vt": "RULER", "chat_recall": "MT-Eval"}
HAYSTACKS = ("noise", "prose")
TASKS = [f"{t}-{h}" for t in ("niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery")
         for h in HAYSTACKS] + ["vt", "chat_recall"]


def family(task: str) -> str:
    return task.split("-")[0]


@lru_cache(maxsize=1)
def prose_sentences() -> tuple[str, ...]:
    """Sentences of the corpus' prose: the descriptions of the permissively licensed packages
    installed beside heedful (heedful/train/corpus.py's reader and filters), in a fixed order."""
    import sysconfig
    from pathlib import Path

    from heedful.train.corpus import (_licence_from_metadata, _metadata_body, is_permissive, is_prose,
                                      split_paragraphs)

    out: list[str] = []
    for info in sorted(Path(sysconfig.get_paths()["purelib"]).glob("*.dist-info")):
        meta = info / "METADATA"
        if not meta.is_file() or info.name.lower().startswith("heedful"):
            continue
        text = meta.read_text(errors="replace")
        if not is_permissive(_licence_from_metadata(text)):
            continue
        for p in split_paragraphs(_metadata_body(text)):
            if is_prose(p) and not re.search(r"\d{5,}|magic number", p):
                out.extend(s for s in re.split(r"(?<=[.!?]) ", p) if len(s) > 20)
    if len(out) < 200:  # a bare environment: the corpus' generated stories
        from heedful.train.synthetic import story

        rng = random.Random(0)
        while len(out) < 2000:
            out.extend(s for s in re.split(r"(?<=[.!?]) ", story(rng)) if s)
    return tuple(out)


class Counter:
    """Token counts of short texts (cached), to build a haystack of a given length."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.cache: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        n = self.cache.get(text)
        if n is None:
            n = self.cache[text] = len(self.tok(text, add_special_tokens=False)["input_ids"])
        return n


def haystack(kind: str, n_tokens: int, rng: random.Random, count: Counter) -> list[str]:
    """Sentences (each with its leading space) adding up to about n_tokens tokens."""
    if kind == "noise":
        pool = [" " + s + "." for s in NOISE[:-1].split(". ")]
        start = 0
    else:
        pool = [" " + s for s in prose_sentences()]
        start = rng.randrange(len(pool))
    out, total, k = [], 0, start
    while total < n_tokens:
        s = pool[k % len(pool)]
        out.append(s)
        total += count(s)
        k += 1
    return out


def _key(rng: random.Random, used: set) -> str:
    while True:
        k = f"{rng.choice(ADJS)}-{rng.choice(NOUNS)}"
        if k not in used:
            used.add(k)
            return k


def _value(rng: random.Random) -> str:
    return str(rng.randint(1_000_000, 9_999_999))


def _insert(sentences: list[str], needles: list[tuple[str, list[str]]], rng: random.Random,
            lo: float = 0.05, hi: float = 0.8) -> list[dict]:
    """The haystack as pieces, each needle its own piece at a random depth in [lo, hi) of the
    haystack (RULER places needles at depths through the context), the rest in runs of
    sentences between them."""
    n = len(sentences)
    at = sorted(rng.randrange(int(lo * n), max(int(lo * n) + 1, int(hi * n))) for _ in needles)
    pieces, prev = [], 0
    for pos, (text, pin) in zip(at, needles):
        if pos > prev:
            pieces.append({"text": "".join(sentences[prev:pos]), "pin": []})
        pieces.append({"text": text, "pin": pin})
        prev = pos
    pieces.append({"text": "".join(sentences[prev:]), "pin": []})
    return [p for p in pieces if p["text"]]


def _needle(key: str, value: str) -> tuple[str, list[str]]:
    # the person pins the key and its value, what a reader would underline
    return " " + NEEDLE.format(key=key, value=value), [f"{key} is: {value}"]


def niah(variant: str, hay: str, seed: int, n_tokens: int, count: Counter) -> dict:
    rng = random.Random(f"{variant}-{hay}-{seed}")
    used: set = set()
    if variant == "niah_single":
        keys = [_key(rng, used)]
        needles = [(keys[0], _value(rng))]
        queried = keys
    elif variant == "niah_multikey":  # one needle queried among distractors with other keys
        needles = [(_key(rng, used), _value(rng)) for _ in range(4)]
        queried = [needles[0][0]]
    elif variant == "niah_multivalue":  # one key, several values: all asked
        key = _key(rng, used)
        needles = [(key, _value(rng)) for _ in range(4)]
        queried = [key]
    else:  # niah_multiquery: several keys, two of them asked
        needles = [(_key(rng, used), _value(rng)) for _ in range(4)]
        queried = [k for k, _ in rng.sample(needles, 2)]
    order = list(needles)
    rng.shuffle(order)
    answers = [v for k, v in needles if k in queried]
    what = " and ".join(queried)
    if variant == "niah_multivalue":
        question = f"What are all the special magic numbers for {what} mentioned in the provided text?"
        prefix = f"The special magic numbers for {what} mentioned in the provided text are"
    elif variant == "niah_multiquery":
        question = f"What are all the special magic numbers for {what} mentioned in the provided text?"
        prefix = f"The special magic numbers for {what} mentioned in the provided text are"
    else:
        question = f"What is the special magic number for {what} mentioned in the provided text?"
        prefix = f"The special magic number for {what} mentioned in the provided text is"
    overhead = count(PREAMBLE) + count(question) + count(prefix) + 40 + sum(count(NEEDLE) + 8 for _ in needles)
    sentences = haystack(hay, max(16, n_tokens - overhead), rng, count)
    pieces = _insert(sentences, [_needle(k, v) for k, v in order], rng)
    pieces.insert(0, {"text": PREAMBLE.rstrip("\n"), "pin": []})
    return {"task": f"{variant}-{hay}", "seed": seed, "context": n_tokens, "kind": "text", "pieces": pieces,
            "question": "\n" + question, "answer_prefix": " " + prefix, "answers": answers,
            "max_new": 12 * len(answers)}


def _var(rng: random.Random, used: set) -> str:
    while True:
        v = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))
        if v not in used:
            used.add(v)
            return v


def variable_tracking(seed: int, n_tokens: int, count: Counter, hops: int = 4) -> dict:
    rng = random.Random(f"vt-{seed}")
    used: set = set()
    names = [_var(rng, used) for _ in range(hops + 1)]
    value = str(rng.randint(10000, 99999))
    lines = [f"VAR {names[0]} = {value}"] + [f"VAR {names[k + 1]} = VAR {names[k]}" for k in range(hops)]
    question = f"Question: Find all variables that are assigned the value {value} in the text above."
    prefix = (f" Answer: According to the chain(s) of variable assignment in the text above, {hops + 1} variables "
              f"are assigned the value {value}, they are:")
    overhead = count(VT_PREAMBLE) + count(question) + count(prefix) + 40 + sum(count(x) + 4 for x in lines)
    sentences = haystack("noise", max(16, n_tokens - overhead), rng, count)
    n = len(sentences)  # the chain in order, at increasing depths (RULER keeps the order)
    at = sorted(rng.sample(range(int(0.05 * n), max(int(0.05 * n) + hops + 1, int(0.8 * n))), hops + 1))
    pieces, prev = [{"text": VT_PREAMBLE.rstrip("\n"), "pin": []}], 0
    for pos, line in zip(at, lines):
        pieces.append({"text": "".join(sentences[prev:pos]), "pin": []})
        pieces.append({"text": " " + line + ".", "pin": [line]})
        prev = pos
    pieces.append({"text": "".join(sentences[prev:]), "pin": []})
    return {"task": "vt", "seed": seed, "context": n_tokens, "kind": "text",
            "pieces": [p for p in pieces if p["text"]], "question": "\n" + question, "answer_prefix": prefix,
            "answers": names, "max_new": 4 * (hops + 1) + 6}


FACTS = [("my locker code is {v}", "What is my locker code?"),
         ("my flight number is {v}", "What is my flight number?"),
         ("my room number is {v}", "What is my room number?")]


def chat_recall(seed: int, n_tokens: int, count: Counter) -> dict:
    """MT-Eval's recollection: a fact in the first turn, chatter, then a question about it (one
    fact: with three of a kind the 135M model mixes them up even with full attention)."""
    from heedful.bench.chat import CHATTER

    rng = random.Random(f"chat-{seed}")
    facts = [(f.format(v=str(rng.randint(1000, 9999))), q) for f, q in [FACTS[rng.randrange(len(FACTS))]]]
    turns = []
    for f, _ in facts:
        v = f.rsplit(" ", 1)[1]
        turns.append({"role": "user", "text": f"Please remember: {f}.", "pin": [v]})
        turns.append({"role": "assistant", "text": "Got it, I will remember that.", "pin": []})
    total = sum(count(t["text"]) + 6 for t in turns) + 60
    while total < n_tokens - 40:
        q, a = CHATTER[rng.randrange(len(CHATTER))]
        turns += [{"role": "user", "text": q, "pin": []}, {"role": "assistant", "text": a, "pin": []}]
        total += count(q) + count(a) + 12
    fact, question = facts[rng.randrange(len(facts))]
    return {"task": "chat_recall", "seed": seed, "context": n_tokens, "kind": "chat", "turns": turns,
            "question": question + " Answer with the number only.", "answer_prefix": "",
            "answers": [fact.rsplit(" ", 1)[1]], "max_new": 12}


def episode(task: str, seed: int, n_tokens: int, tokenizer, count: Counter | None = None) -> dict:
    count = count or Counter(tokenizer)
    if task == "vt":
        return variable_tracking(seed, n_tokens, count)
    if task == "chat_recall":
        return chat_recall(seed, n_tokens, count)
    variant, hay = task.split("-")
    return niah(variant, hay, seed, n_tokens, count)


def score(reply: str, answers: list[str]) -> float:
    """RULER's string_match_all: the share of the answers that the reply contains."""
    low = reply.lower()
    return sum(a.lower() in low for a in answers) / len(answers)


def context_text(ep: dict) -> str:
    return "".join(p["text"] for p in ep["pieces"])
