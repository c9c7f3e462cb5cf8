"""Evaluation of a trained model for docs/model.md: held-out perplexity (and with the first
tokens' KV dropped), bits per character on held-out plain English prose, first-token attention
share, recall of the held-out episodes with full attention, and sample generations.
(`heedful train evaluate MODEL_DIR`)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from heedful.train.corpus import read_docs, read_episodes
from heedful.train.loop import TokenStream, bits_per_char, eval_loss

SAMPLE_PROMPTS = [
    "One day Mia went to the park with",
    "The library provides",
    "This program is free software; you can",
    "Facts: The code for the blue door is 7316. Tom was born in Lima.\n"
    "Ella walked to the market in the morning. The sun was warm. A fox slept under the tree.\n"
    "Question: What is the code for the blue door?\nAnswer:",
]


def _load(model_dir: str, device: str = "cpu"):
    """Through heedful's own loader: safetensors only, no folder's code run (no
    --trust-remote-code here), every load error one line."""
    from heedful.models.loading import load_model

    lm = load_model(model_dir, dtype="float32", device=device, trust_remote_code=False, attn_implementation="sdpa")
    return lm.model, lm.tokenizer


def check_corpus(corpus_dir) -> Path:
    """The corpus folder holds what evaluate reads; one line naming what is missing."""
    from heedful.errors import HeedfulError

    corpus = Path(corpus_dir)
    if not corpus.is_dir():
        raise HeedfulError(f"--corpus {corpus_dir}: no such folder")
    for name in ("valid.txt", "recall_valid.jsonl"):
        if not (corpus / name).is_file():
            raise HeedfulError(f"--corpus {corpus_dir}: no {name} in it (made by `heedful train corpus`)")
    return corpus


@torch.no_grad()
def greedy_answer(model, tok, prompt: str, max_new: int = 8) -> str:
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
    out = model.generate(ids, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def answer_correct(generated: str, answer: str) -> bool:
    """The answer is what comes first after 'Answer:', up to the first full stop, line end or
    end-of-text token (answers never contain a full stop)."""
    got = generated.split("<|endoftext|>")[0].strip().split("\n")[0]
    return got.split(".")[0].strip() == answer


@torch.no_grad()
def evaluate(model_dir: str, corpus_dir: str = "runs/corpus", rows: int = 64, seq_len: int = 256,
             drop_first: int = 4, skip: int = 64, episodes: int = 100, seed: int = 0, samples: bool = True,
             bpc_chars: int | None = 1_000_000, device: str = "cpu") -> dict:
    """bpc_chars: characters of held-out prose for bits per character (valid_prose.txt, the
    natural text alone; an older corpus without it: valid.txt, stories included)."""
    from heedful.models.inspect import diagnose

    if device == "cpu":
        torch.set_num_threads(1)
    t0 = time.time()
    corpus = check_corpus(corpus_dir)
    model, tok = _load(model_dir, device)
    valid = TokenStream.from_texts(tok, read_docs(corpus / "valid.txt"), seq_len)
    rng = np.random.default_rng([seed, 7])
    starts = rng.choice(valid.starts, min(rows, len(valid.starts)), replace=False)
    data = valid.rows(starts, seq_len)
    dev = torch.device(device)
    full, dropped = [], []
    for i in range(0, len(data), 8):
        full.append(eval_loss(model, data[i:i + 8], dev, skip=skip))
        dropped.append(eval_loss(model, data[i:i + 8], dev, drop_first=drop_first, skip=skip))
    res = {"model": model_dir, "architecture": type(model).__name__, "valid_rows": len(data), "seq_len": seq_len,
           "loss_positions": f">= {skip}",
           "valid_loss": float(np.mean(full)), "valid_ppl": math.exp(float(np.mean(full))),
           f"valid_loss_first{drop_first}_dropped": float(np.mean(dropped)),
           f"valid_ppl_first{drop_first}_dropped": math.exp(float(np.mean(dropped)))}
    prose = corpus / "valid_prose.txt"
    prose = prose if prose.is_file() else corpus / "valid.txt"
    bpc = bits_per_char(model, tok, read_docs(prose), seq_len, dev, bpc_chars)
    res.update({"bits_per_char": bpc["bits_per_char"], "bpc_text": f"{prose.name}: {bpc['documents']} documents, "
                f"{bpc['chars']} characters, {bpc['tokens']} tokens, windows of {seq_len}"})
    shares, acts, gates = [], [], []
    for r in data[:8]:
        d = diagnose(model, r[None, :seq_len].to(dev))
        shares.append(d.first_token_share)
        acts.append(d.max_activation)
        if d.mean_gate is not None:
            gates.append(d.mean_gate)
    model.set_attn_implementation("sdpa")
    res["first_token_share"] = float(np.mean(shares))
    res["max_activation"] = float(np.max(acts))
    res["mean_gate"] = float(np.mean(gates)) if gates else None
    eps = read_episodes(corpus / "recall_valid.jsonl")[:episodes]
    hits = [answer_correct(greedy_answer(model, tok, e["prompt"]), e["answer"]) for e in eps]
    res["recall_full_attention"] = float(np.mean(hits)) if hits else None
    res["recall_episodes"] = len(hits)
    if samples:
        out = []
        for i, p in enumerate(SAMPLE_PROMPTS):
            ids = tok(p, add_special_tokens=False, return_tensors="pt")["input_ids"].to(dev)
            torch.manual_seed(seed + i)
            g = model.generate(ids, max_new_tokens=48, do_sample=True, temperature=0.8, top_p=0.95,
                               pad_token_id=tok.pad_token_id)
            greedy = model.generate(ids, max_new_tokens=48, do_sample=False, pad_token_id=tok.pad_token_id)
            out.append({"prompt": p, "sampled (T=0.8, top-p 0.95, seed %d)" % (seed + i):
                        tok.decode(g[0, ids.shape[1]:], skip_special_tokens=True),
                        "greedy": tok.decode(greedy[0, ids.shape[1]:], skip_special_tokens=True)})
        res["samples"] = out
    res["eval_seconds"] = round(time.time() - t0, 1)
    return res
