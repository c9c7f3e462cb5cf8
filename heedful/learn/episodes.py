"""Recorded sessions to learn from: recall episodes (heedful.train.synthetic) written as
replay scripts in which "the person" pins each fact as soon as it has streamed in.

The text streams in one sentence per prompt line; a fact is pinned (a text target, so the
script is independent of the tokenizer) right after the line that completes it. Now and
then the person pins a filler sentence by mistake and drops it a little later (a token the
person threw away), or unpins a fact once the question is asked (still a token the person
kept). Then the question is prompted and a few tokens are generated.

Arrangements, so that a held-out evaluation can differ from training:
- "first": "Facts: ..." on the first line, then prose (the corpus' own arrangement);
- "after": some prose first, then the facts (with or without the "Facts:" header), then prose;
- "scattered": each fact alone somewhere in the prose.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from heedful.errors import HeedfulError

ARRANGEMENTS = ("first", "after", "scattered")


def arranged_episode(rng: random.Random, arrangement: str, n_sentences: int = 16) -> dict:
    """One episode: {"sentences": [...], "facts": [...], "fact_at": [sentence index of each
    fact], "question", "answer", "arrangement", "text"} (text: the sentences joined)."""
    from heedful.train.synthetic import filler_sentence, recall_episode

    if arrangement not in ARRANGEMENTS:
        raise HeedfulError(f"arrangement {arrangement!r}: expected one of {', '.join(ARRANGEMENTS)}")
    ep = recall_episode(rng, n_filler=0)
    facts = list(ep.facts)
    prose = [filler_sentence(rng) for _ in range(max(1, n_sentences - len(facts)))]
    if arrangement == "first":
        sentences = ["Facts: " + facts[0]] + facts[1:] + prose
        at = list(range(len(facts)))
    elif arrangement == "after":
        k = rng.randint(2, max(2, len(prose) // 2))
        head = ["Facts: " + facts[0]] if rng.random() < 0.5 else [facts[0]]
        sentences = prose[:k] + head + facts[1:] + prose[k:]
        at = [k + i for i in range(len(facts))]
    else:
        slots = sorted(rng.sample(range(len(prose) + 1), len(facts)))
        sentences, at, fi = [], [], 0
        for i in range(len(prose) + 1):
            while fi < len(facts) and slots[fi] == i:
                at.append(len(sentences))
                sentences.append(facts[fi])
                fi += 1
            if i < len(prose):
                sentences.append(prose[i])
    text = _join(sentences)
    return {"sentences": sentences, "facts": facts, "fact_at": at, "question": ep.question, "answer": ep.answer,
            "arrangement": arrangement, "text": text}


def _join(sentences: list[str]) -> str:
    return " ".join(sentences) + "\n"


def episode_script(ep: dict, rng: random.Random, *, window: int = 64, budget: int = 128, gen: int = 6,
                   mistakes: bool = True) -> list[dict]:
    """The replay script of one recorded session over `ep` (see the module's docstring)."""
    lines: list[dict] = [{"op": "config", "window": window, "budget": budget, "prefill_chunk": 16}]
    facts_at = set(ep["fact_at"])
    wrong = None  # a filler sentence pinned by mistake, dropped two sentences later
    n = len(ep["sentences"])
    for i, sentence in enumerate(ep["sentences"]):
        piece = sentence if i == 0 else " " + sentence
        lines.append({"op": "prompt", "text": piece + ("\n" if i == n - 1 else "")})
        if i in facts_at:
            fact = ep["facts"][ep["fact_at"].index(i)]
            lines.append({"op": "pin", "text": fact})
        elif (mistakes and wrong is None and i + 2 < n and rng.random() < 0.08 and sentence.count(" ") >= 3
              and ep["sentences"].count(sentence) == 1):
            wrong = (i, sentence)
            lines.append({"op": "pin", "text": sentence})
        if wrong is not None and i == wrong[0] + 2:
            lines.append({"op": "drop", "text": wrong[1]})
    lines.append({"op": "prompt", "text": "Question: " + ep["question"] + "\nAnswer:"})
    if mistakes and rng.random() < 0.1:
        lines.append({"op": "unpin", "text": ep["facts"][0]})
    lines.append({"op": "generate", "n": gen})
    return lines


def bench_episode(ep: dict) -> dict:
    """The line of an --episodes-file: {"text", "facts", "question", "answer"}."""
    return {"text": ep["text"], "facts": ep["facts"], "question": ep["question"], "answer": ep["answer"],
            "arrangement": ep["arrangement"]}


def write_episodes(out: Path, n: int, arrangements: list[str], seed: int = 0, n_sentences: int = 16,
                   window: int = 64, budget: int = 128) -> dict:
    """Writes out/scripts/NNNN.jsonl (one replay script per session) and out/episodes.jsonl
    (the same episodes for `heedful bench retention --episodes-file`); returns counts."""
    for a in arrangements:
        if a not in ARRANGEMENTS:
            raise HeedfulError(f"--arrangement {a!r}: expected one of {', '.join(ARRANGEMENTS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HeedfulError(f"--out {out}: is a file, expected a folder")
    rng = random.Random(seed)
    eps = [arranged_episode(rng, arrangements[k % len(arrangements)], n_sentences) for k in range(n)]
    scripts = out / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    for k, ep in enumerate(eps):
        lines = episode_script(ep, rng, window=window, budget=budget)
        (scripts / f"{k:04d}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    with open(out / "episodes.jsonl", "w", encoding="utf-8") as f:
        for ep in eps:
            f.write(json.dumps(bench_episode(ep)) + "\n")
    return {"episodes": n, "arrangements": arrangements, "scripts": str(scripts), "episodes_file": str(out / "episodes.jsonl")}


def read_episodes_file(path) -> list[dict]:
    """An --episodes-file: one {"text", "facts": [...], "question", "answer"} per line, each
    fact a substring of the text. Errors are one line naming FILE:LINE."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HeedfulError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HeedfulError(f"{path}: cannot read: {e}") from None
    eps = []
    for k, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise HeedfulError(f"{path}:{k}: not JSON ({e.msg})") from None
        if not isinstance(d, dict):
            raise HeedfulError(f"{path}:{k}: expected a JSON object")
        for key in ("text", "question", "answer"):
            if not isinstance(d.get(key), str) or not d[key]:
                raise HeedfulError(f"{path}:{k}: field {key!r} must be a non-empty string")
        facts = d.get("facts")
        if not isinstance(facts, list) or not all(isinstance(f, str) and f for f in facts):
            raise HeedfulError(f"{path}:{k}: field 'facts' must be a list of non-empty strings")
        for f in facts:
            if f not in d["text"]:
                raise HeedfulError(f"{path}:{k}: fact {f[:40]!r} is not in the text")
        eps.append(d)
    if not eps:
        raise HeedfulError(f"{path}: no episodes")
    return eps
