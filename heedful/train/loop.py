"""The training pipeline: corpus -> tokenizer -> token streams -> model -> checkpoints.

Reproducible: the batch of step t is drawn from a generator seeded with (seed, t), so a
resumed run sees exactly the batches an uninterrupted run would have seen. Checkpoints
(``ckpt/``: the model in safetensors, optimizer and scheduler state, the step) are written
every ``ckpt_every`` steps; ``resume=True`` continues from the last one.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm import tqdm
from transformers.utils import logging as hf_logging

from heedful.train.corpus import build_corpus, read_docs, read_episodes, write_copy_drills
from heedful.train.models import PRESETS, ModelSize, build_model, count_params
from heedful.train.tokenizer import TOKENIZER_CHARS, VOCAB_SIZE, load_tokenizer, tokenizer_texts, train_tokenizer


PROBE_FROM, PROBE_STEPS = 5, 20  # --minutes: steps 5..24 are timed (the first ones warm up)
TIME_SHARE = 0.92  # of the time left after the probe, what the steps may use (the rest: evals, checkpoints)


@dataclass
class TrainConfig:
    corpus_dir: str = "runs/corpus"
    out_dir: str = "runs/gated"
    tokenizer_dir: str | None = None  # reuse a trained tokenizer (the twin must share it)
    init_from: str | None = None  # start from this trained model's weights (a second recipe stage)
    gated: bool = True
    size: ModelSize = field(default_factory=lambda: PRESETS["cpu"])
    vocab_size: int = VOCAB_SIZE
    seq_len: int = 256
    batch_size: int = 8
    steps: int = 2000
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    recall_fraction: float = 0.3  # share of rows that start in the recall stream
    copy_fraction: float = 0.0  # share of the recall stream's documents that are copy drills
    seed: int = 0
    eval_every: int = 250
    eval_rows: int = 16
    eval_episodes: int = 32
    ckpt_every: int = 250
    threads: int | None = 1
    device: str | None = None
    dtype: str = "float32"  # "bfloat16": bf16 autocast (CUDA; CPU too, for the tests)
    max_minutes: float | None = None  # set steps from the measured speed so training takes about this long
    tokenizer_chars: int = TOKENIZER_CHARS  # the tokenizer learns from the first this many characters of train.txt
    bpc_chars: int = 100_000  # held-out prose evaluated for bits per character at each eval (0: none)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = self.size.to_dict()
        return d


# ---------------------------------------------------------------------------------------
# data


class TokenStream:
    """Documents concatenated with EOS between them, and the offsets rows may start at
    (document starts, and every seq_len tokens inside a long document)."""

    def __init__(self, ids: np.ndarray, starts: np.ndarray):
        self.ids = ids
        self.starts = starts

    @classmethod
    def from_texts(cls, tokenizer, texts: list[str], seq_len: int, batch: int = 512) -> "TokenStream":
        eos = tokenizer.eos_token_id
        chunks, starts, pos = [], [], 0
        for i in range(0, len(texts), batch):
            for ids in tokenizer(texts[i:i + batch], add_special_tokens=False)["input_ids"]:
                ids = list(ids) + [eos]
                for off in range(0, max(1, len(ids) - 8), seq_len):
                    starts.append(pos + off)
                chunks.append(np.asarray(ids, dtype=np.int32))
                pos += len(ids)
        all_ids = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
        # wrap: append the head so any start has seq_len + 1 tokens after it
        all_ids = np.concatenate([all_ids, all_ids[: seq_len + 1]])
        return cls(all_ids, np.asarray(starts, dtype=np.int64))

    def rows(self, starts: np.ndarray, seq_len: int) -> torch.Tensor:
        idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
        return torch.from_numpy(self.ids[idx].astype(np.int64))


def batch_for_step(text: TokenStream, recall: TokenStream | None, step: int, cfg: TrainConfig) -> torch.Tensor:
    rng = np.random.default_rng([cfg.seed, step])
    n_recall = 0
    if recall is not None and len(recall.starts):
        n_recall = int(rng.binomial(cfg.batch_size, cfg.recall_fraction))
    rows = []
    if n_recall:
        rows.append(recall.rows(rng.choice(recall.starts, n_recall), cfg.seq_len))
    if cfg.batch_size - n_recall:
        rows.append(text.rows(rng.choice(text.starts, cfg.batch_size - n_recall), cfg.seq_len))
    return torch.cat(rows)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


# ---------------------------------------------------------------------------------------
# eval


@torch.no_grad()
def eval_loss(model, rows: torch.Tensor, device, drop_first: int = 0, skip: int = 0) -> float:
    """Mean next-token loss over rows. drop_first=k masks the first k tokens out of every
    query's attention (their KV "evicted"); the loss counts positions >= skip (and >= k)."""
    model.eval()
    x = rows[:, :-1].to(device)
    y = rows[:, 1:].to(device)
    L = x.shape[1]
    kwargs = {}
    if drop_first:
        allowed = torch.ones(L, L, dtype=torch.bool, device=device).tril()
        allowed[drop_first:, :drop_first] = False
        mask = torch.zeros(L, L, device=device)
        mask.masked_fill_(~allowed, torch.finfo(torch.float32).min)
        kwargs["attention_mask"] = mask[None, None].expand(x.shape[0], 1, L, L)
    logits = model(input_ids=x, **kwargs).logits.float()
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")
    start = max(skip, drop_first)
    return float(loss[:, start:].mean())


@torch.no_grad()
def recall_accuracy(model, tokenizer, episodes: list[dict], device) -> float:
    """Teacher-forced exact match: an episode counts when every answer token is the argmax."""
    if not episodes:
        return float("nan")
    model.eval()
    hits = 0
    for ep in episodes:
        p = tokenizer(ep["prompt"], add_special_tokens=False)["input_ids"]
        a = tokenizer(" " + ep["answer"], add_special_tokens=False)["input_ids"]
        x = torch.tensor([p + a], device=device)
        logits = model(input_ids=x).logits[0]
        pred = logits[len(p) - 1: len(p) + len(a) - 1].argmax(-1).tolist()
        hits += pred == a
    return hits / len(episodes)


@torch.no_grad()
def bits_per_char(model, tokenizer, docs: list[str], seq_len: int, device, max_chars: int | None = None,
                  batch: int = 8) -> dict:
    """Bits per character of held-out text: the documents (up to max_chars, whole documents)
    are tokenised with EOS before each, cut into windows of seq_len predicted tokens (each
    window's context starts at its first token); bpc = total loss in nats over the text's tokens
    (the EOS between documents not counted) / ln 2 / the documents' characters."""
    model.eval()
    eos = tokenizer.eos_token_id
    ids, counted, chars, n_docs = [eos], [False], 0, 0
    for d in docs:
        if max_chars is not None and chars >= max_chars:
            break
        t = tokenizer(d, add_special_tokens=False)["input_ids"]
        ids += list(t) + [eos]
        counted += [True] * len(t) + [False]
        chars += len(d)
        n_docs += 1
    ids_t = torch.tensor(ids, dtype=torch.long)
    w = torch.tensor(counted[1:], dtype=torch.bool)
    n = len(ids) - 1
    nats = 0.0
    starts = list(range(0, n, seq_len))
    full = [s for s in starts if s + seq_len <= n]
    for i in range(0, len(full), batch):
        b = full[i:i + batch]
        x = torch.stack([ids_t[s:s + seq_len] for s in b]).to(device)
        y = torch.stack([ids_t[s + 1:s + seq_len + 1] for s in b]).to(device)
        m = torch.stack([w[s:s + seq_len] for s in b]).to(device)
        loss = torch.nn.functional.cross_entropy(model(input_ids=x).logits.float().transpose(1, 2), y, reduction="none")
        nats += float((loss * m).sum())
    if starts and starts[-1] + seq_len > n:  # the last, shorter window
        s = starts[-1]
        x, y, m = ids_t[None, s:n].to(device), ids_t[None, s + 1:n + 1].to(device), w[None, s:n].to(device)
        loss = torch.nn.functional.cross_entropy(model(input_ids=x).logits.float().transpose(1, 2), y, reduction="none")
        nats += float((loss * m).sum())
    return {"bits_per_char": nats / math.log(2) / max(1, chars), "chars": chars, "documents": n_docs,
            "tokens": int(w.sum()), "chars_per_token": chars / max(1, int(w.sum()))}


# ---------------------------------------------------------------------------------------
# the pipeline


def _log_json(path: Path, rec: dict):
    with open(path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")


def prepare_tokenizer(cfg: TrainConfig, train_docs: list[str], episodes: list[dict], log=print):
    if cfg.tokenizer_dir:
        return load_tokenizer(cfg.tokenizer_dir)
    tok_dir = Path(cfg.out_dir) / "tokenizer"
    if (tok_dir / "tokenizer.json").is_file():
        return load_tokenizer(tok_dir)
    log(f"tokenizer: training byte-level BPE, vocab {cfg.vocab_size}")
    texts = tokenizer_texts(train_docs, episodes, cfg.tokenizer_chars)
    return train_tokenizer(texts, cfg.vocab_size, tok_dir, model_max_length=cfg.size.max_position_embeddings)


def train(cfg: TrainConfig, resume: bool = False, log=print, progress: bool = True) -> dict:
    """Runs the whole pipeline; returns the final metrics (also in out_dir/training.json)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = Path(cfg.corpus_dir)
    if not (corpus / "manifest.json").is_file():
        log(f"corpus: none at {corpus}, building it")
        build_corpus(corpus, seed=cfg.seed, log=log)
    train_docs = read_docs(corpus / "train.txt")
    valid_docs = read_docs(corpus / "valid.txt")
    prose = read_docs(corpus / "valid_prose.txt") if (corpus / "valid_prose.txt").is_file() else []
    episodes = read_episodes(corpus / "recall_train.jsonl")
    valid_eps = read_episodes(corpus / "recall_valid.jsonl")
    tokenizer = prepare_tokenizer(cfg, train_docs, episodes, log)
    t0 = time.time()
    text = TokenStream.from_texts(tokenizer, train_docs, cfg.seq_len)
    if cfg.copy_fraction and not (corpus / "copy_train.jsonl").is_file():
        write_copy_drills(corpus, len(episodes), cfg.seed)
    recall_texts = [e["text"] for e in episodes]
    if cfg.copy_fraction:
        drills = [e["text"] for e in read_episodes(corpus / "copy_train.jsonl")]
        # interleave: a copy_fraction share of the recall stream's documents are copy drills
        k = int(round(len(recall_texts) * cfg.copy_fraction / max(1e-9, 1 - cfg.copy_fraction)))
        drills = (drills * (k // max(1, len(drills)) + 1))[:k]
        mixed = recall_texts + drills
        np.random.default_rng([cfg.seed, 5]).shuffle(mixed)
        recall_texts = mixed
    recall = TokenStream.from_texts(tokenizer, recall_texts, cfg.seq_len)
    valid = TokenStream.from_texts(tokenizer, valid_docs, cfg.seq_len)
    vrng = np.random.default_rng([cfg.seed, 10**9])
    valid_rows = valid.rows(vrng.choice(valid.starts, min(cfg.eval_rows, len(valid.starts)), replace=False),
                            cfg.seq_len)
    log(f"data: {len(text.ids) / 1e6:.2f}M train tokens, {len(recall.ids) / 1e6:.2f}M recall tokens, "
        f"{len(valid.ids) / 1e6:.3f}M valid tokens (tokenised in {time.time() - t0:.0f}s)")

    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_model(cfg.size, len(tokenizer), tokenizer, gated=cfg.gated, seed=cfg.seed).to(device)
    if cfg.init_from:
        sd = load_file(str(Path(cfg.init_from) / "model.safetensors"), device=str(device))
        try:
            missing, unexpected = model.load_state_dict(sd, strict=False)
        except RuntimeError as e:
            raise ValueError(f"--init-from {cfg.init_from}: weights do not match this model: "
                             f"{str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}") from None
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise ValueError(f"--init-from {cfg.init_from}: weights do not match this model "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        if model.config.tie_word_embeddings:
            model.tie_weights()
        log(f"init: weights from {cfg.init_from}")
    n_params = count_params(model)
    log(f"model: {'gated Qwen3.5' if cfg.gated else 'ungated Qwen3'}, {n_params / 1e6:.2f}M parameters, "
        f"device {device}")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95),
                            fused=device.type == "cuda")
    ckpt = out / "ckpt"
    step, elapsed, tokens_seen = 0, 0.0, 0
    if resume and (ckpt / "state.pt").is_file():
        state = torch.load(ckpt / "state.pt", map_location=device, weights_only=False)
        sd = load_file(str(ckpt / "model.safetensors"), device=str(device))
        model.load_state_dict(sd, strict=False)
        if model.config.tie_word_embeddings:
            model.tie_weights()
        opt.load_state_dict(state["optimizer"])
        step, elapsed, tokens_seen = state["step"], state["elapsed"], state["tokens"]
        if cfg.max_minutes and state.get("total_steps"):  # a --minutes run keeps the steps it chose
            cfg.steps = state["total_steps"]
        log(f"resume: from step {step} of {cfg.steps}")
    metrics_path = out / "metrics.jsonl"
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def evaluate(step):
        rec = {"step": step, "tokens": tokens_seen, "elapsed_s": round(elapsed, 1),
               "valid_loss": eval_loss(model, valid_rows, device),
               "recall_acc": recall_accuracy(model, tokenizer, valid_eps[: cfg.eval_episodes], device)}
        rec["valid_ppl"] = math.exp(rec["valid_loss"])
        if prose and cfg.bpc_chars:
            rec["valid_prose_bpc"] = bits_per_char(model, tokenizer, prose, cfg.seq_len, device, cfg.bpc_chars)[
                "bits_per_char"]
        model.train()
        _log_json(metrics_path, rec)
        return rec

    def save_ckpt():
        ckpt.mkdir(exist_ok=True)
        tmp = ckpt / "state.pt.tmp"
        model.save_pretrained(str(ckpt), safe_serialization=True)
        torch.save({"optimizer": opt.state_dict(), "step": step, "elapsed": elapsed, "tokens": tokens_seen,
                    "total_steps": cfg.steps}, tmp)
        os.replace(tmp, ckpt / "state.pt")

    bar = None
    if progress:
        bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    model.train()
    last = {}
    timed = None if cfg.max_minutes and not (resume and (ckpt / "state.pt").is_file()) else False
    wall0 = time.time()
    while step < cfg.steps:
        if timed is None and step >= PROBE_FROM:
            timed = (step, time.time())
        elif timed and step == timed[0] + PROBE_STEPS:  # steps from the measured speed
            per_step = (time.time() - timed[1]) / PROBE_STEPS
            left = cfg.max_minutes * 60 - (time.time() - wall0)
            cfg.steps = max(step + 1, step + int(left * TIME_SHARE / per_step))
            timed = False
            log(f"--minutes {cfg.max_minutes:g}: {per_step * 1000:.0f} ms a step, training for {cfg.steps} steps")
            if bar is not None:
                bar.total = cfg.steps
            (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
        t = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        rows = batch_for_step(text, recall, step, cfg).to(device)
        with autocast:
            loss = _lm_loss(model, rows)
        loss.backward()
        if timed:
            loss.item()  # while the speed is measured: the step's real time
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += rows[:, :-1].numel()
        elapsed += time.time() - t
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr_at(step - 1, cfg):.1e}")
        if step % 10 == 0 or step == cfg.steps:
            _log_json(metrics_path, {"step": step, "loss": round(loss.item(), 4), "gnorm": round(float(gnorm), 3),
                                     "lr": lr_at(step - 1, cfg), "elapsed_s": round(elapsed, 1)})
        if step % cfg.eval_every == 0 or step == cfg.steps:
            last = evaluate(step)
            msg = (f"eval step {step}: valid loss {last['valid_loss']:.3f} (ppl {last['valid_ppl']:.1f}), "
                   f"recall {last['recall_acc']:.2f}")
            bar.write(msg) if bar is not None else log(msg)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            save_ckpt()
    if bar is not None:
        bar.close()
    if not last:
        last = evaluate(step)
    model.eval()
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    info = {"architecture": type(model).__name__, "gated": cfg.gated, "parameters": n_params,
            "steps": step, "tokens": tokens_seen, "train_seconds": round(elapsed, 1),
            "device": str(device), "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "final_eval": last, "config": cfg.to_dict(),
            "corpus_manifest": str(corpus / "manifest.json")}
    (out / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    log(f"saved: {out} ({n_params / 1e6:.2f}M parameters, {step} steps, {tokens_seen / 1e6:.2f}M tokens, "
        f"{elapsed / 60:.1f} min)")
    return info


def _lm_loss(model, rows: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=rows[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1))
