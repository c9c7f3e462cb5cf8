"""Training a fold compressor (heedful/selector/compressor.py) with the model frozen.

The engine streams a token at a time: before token t's forward the window's oldest token
leaves, and once a block's last token has left, its rows become one summary row placed where
the block stood (autofold.py). Streaming is too slow to train through, so `fold_logits` runs
the same attention pattern over a whole row of T tokens in one forward, through an attention
function of its own: query t attends

- the window, tokens t - W + 1 .. t, at their own positions (compaction keeps a window's
  distances), and
- the summaries of the blocks whose last token has left (at most R, the newest), each at the
  distance the engine gives it: its rank counted back from the query (W for the newest).

Summaries are made from the model's own position-free keys and values of that forward, so
gradients reach the compressor through every later layer. tests/train/test_compressor.py
checks that these logits equal the engine's, token by token. The objective is the model's
next-token loss under fold attention on the tokens that see a summary.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from heedful.errors import HeedfulError
from heedful.selector.attention import implementation
from heedful.selector.compressor import LearnedPool, MeanPool, model_sizes
from heedful.selector.rope import Rotary
from heedful.train.synthetic import copy_drill, recall_episode, story

ATTENTION = "heedful_fold_train"
EVAL_SEED = 12345  # generated held-out text (bench fold's too); training text uses other seeds


@dataclass(frozen=True)
class FoldPattern:
    window: int  # W
    rows: int  # R summary rows at most (0: window only)
    block: int  # F tokens per summary

    def layout(self, T: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For a row of T tokens: which block summaries each query sees [T, N], the position a
        summary is rotated to for each query [T, N], and which tokens each query sees [T, T]."""
        W, R, Fb = self.window, self.rows, self.block
        t = torch.arange(T, device=device)
        done = (t - W + 1).clamp(min=0) // Fb  # blocks whose last token has left before t's forward
        b = torch.arange(T // Fb, device=device)
        seen = (b[None] < done[:, None]) & (b[None] >= done[:, None] - R)
        position = (t[:, None] - (W - 1 + done[:, None] - b[None])).clamp(min=0)
        window = (t[None, :] <= t[:, None]) & (t[None, :] > t[:, None] - W)
        return seen, position, window


@dataclass
class FoldState:
    pattern: FoldPattern
    compressor: object  # MeanPool or LearnedPool
    rotary: Rotary
    # a control: each row's summaries made from the next row's blocks (another text), so
    # what a compressor gains without reading the text itself shows
    swap_rows: bool = False


def fold_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                   heedful_fold: FoldState | None = None, **kwargs):
    """q [B, Hq, T, D]; k, v [B, Hkv, T, D], keys rotated at positions 0..T-1."""
    st = heedful_fold
    B, Hq, T, D = query.shape
    Hkv = key.shape[1]
    g, Fb = Hq // Hkv, st.pattern.block
    scale = scaling if scaling is not None else D ** -0.5
    seen, position, window = st.pattern.layout(T, query.device)
    n = T // Fb
    q = query.reshape(B, Hkv, g, T, D)
    win = torch.einsum("bhgtd,bhjd->bhgtj", q, key).masked_fill(~window, float("-inf"))
    if n and st.pattern.rows:
        free = st.rotary.rotate(key, -torch.arange(T, device=key.device))  # position-free keys
        sk, sv = st.compressor.pool(module.layer_idx, free[:, :, : n * Fb].reshape(B, Hkv, n, Fb, D),
                                    value[:, :, : n * Fb].reshape(B, Hkv, n, Fb, D))
        sk, sv = sk.to(key.dtype), sv.to(value.dtype)
        if st.swap_rows:
            sk, sv = sk.roll(1, 0), sv.roll(1, 0)
        # each summary rotated to where each query sees it: [B, Hkv, T, n, D]
        spread = sk[:, :, None].expand(B, Hkv, T, n, D).reshape(B, Hkv, T * n, D)
        rotated = st.rotary.rotate(spread, position.reshape(-1)).reshape(B, Hkv, T, n, D)
        summ = torch.einsum("bhgtd,bhtnd->bhgtn", q, rotated).masked_fill(~seen, float("-inf"))
        p = (torch.cat([summ, win], -1) * scale).float().softmax(-1).to(value.dtype)
        out = torch.einsum("bhgtn,bhnd->bhgtd", p[..., :n], sv) + torch.einsum("bhgtj,bhjd->bhgtd", p[..., n:], value)
    else:
        p = (win * scale).float().softmax(-1).to(value.dtype)
        out = torch.einsum("bhgtj,bhjd->bhgtd", p, value)
    return out.reshape(B, Hq, T, D).transpose(1, 2).contiguous(), None


_registered = False


@contextlib.contextmanager
def fold_attention_on(model):
    """Routes the model's attention through fold_attention for the duration."""
    global _registered
    if not _registered:
        AttentionInterface.register(ATTENTION, fold_attention)
        _registered = True
    with implementation(model, ATTENTION):
        yield


def fold_logits(model, ids: torch.Tensor, pattern: FoldPattern, compressor=None, swap_rows: bool = False) -> torch.Tensor:
    """Logits [B, T, V] of token rows [B, T] under the fold pattern (see the module's text)."""
    state = FoldState(pattern, compressor if compressor is not None else MeanPool(), Rotary.from_model(model),
                      swap_rows)
    with fold_attention_on(model):
        return model(input_ids=ids, use_cache=False, heedful_fold=state).logits


def fold_loss(model, ids: torch.Tensor, pattern: FoldPattern, compressor=None, only_folded: bool = True,
              swap_rows: bool = False):
    """Mean next-token loss (nats); only_folded: over the tokens that see a summary."""
    logits = fold_logits(model, ids, pattern, compressor, swap_rows)[:, :-1]
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    if not only_folded:
        return nll.mean()
    seen, _, _ = pattern.layout(ids.shape[1], ids.device)
    folded = seen.any(-1)[:-1].expand(ids.shape[0], -1).reshape(-1)
    return nll[folded].mean()


# ---------------------------------------------------------------------- data
def synthetic_text(seed: int, chars: int) -> str:
    """Generated stories, recall episodes and copy drills, mixed (heedful.train.synthetic)."""
    rng = random.Random(seed)
    parts, n = [], 0
    while n < chars:
        r = rng.random()
        part = story(rng) if r < 0.6 else copy_drill(rng) if r < 0.8 else recall_episode(rng).text
        parts.append(part)
        n += len(part) + 1
    return "\n".join(parts)


def token_rows(tokenizer, text: str, seq_len: int) -> torch.Tensor:
    ids = tokenizer(text, verbose=False)["input_ids"]  # longer than the context on purpose: no warning
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).reshape(n, seq_len)


@torch.no_grad()
def evaluate(model, rows: torch.Tensor, pattern: FoldPattern, compressor, batch: int = 8) -> dict:
    """Next-token loss on rows, all tokens, for full attention, the window alone at W + R rows,
    the window with mean-pooled summaries and with `compressor`, and (the control) with the
    compressor's summaries of another row's text."""
    T = rows.shape[1]
    runs = {"full": (FoldPattern(T, 0, pattern.block), None, False),
            "window": (FoldPattern(pattern.window + pattern.rows, 0, pattern.block), None, False),
            "mean": (pattern, MeanPool(), False),
            "learned": (pattern, compressor, False),
            "learned_other_text": (pattern, compressor, True)}
    # batches of two rows at least: the control gives each row another row's blocks
    starts = list(range(0, len(rows), batch))
    if len(starts) > 1 and len(rows) - starts[-1] == 1:
        starts.pop()
    spans = [(a, b) for a, b in zip(starts, starts[1:] + [len(rows)])]
    out = {}
    for name, (pat, comp, swap) in runs.items():
        if swap and len(rows) < 2:
            out[name] = None
            continue
        total = sum(fold_loss(model, rows[a:b], pat, comp, only_folded=False, swap_rows=swap).item() * (b - a)
                    for a, b in spans)
        out[name] = total / len(rows)  # rows of equal length: the mean over tokens
    return out


def train(model, tokenizer, pattern: FoldPattern, *, train_rows: torch.Tensor, eval_rows: torch.Tensor,
          steps: int = 300, batch: int = 8, lr: float = 3e-3, seed: int = 0, progress=None,
          compressor: LearnedPool | None = None) -> tuple[LearnedPool, dict]:
    """Trains a LearnedPool (from the mean) on train_rows; returns it and a record."""
    model.requires_grad_(False)
    model.eval()
    device = next(model.parameters()).device
    if compressor is None:
        compressor = LearnedPool(**model_sizes(model), block=pattern.block)
    compressor.to(device).train()
    compressor.requires_grad_(True)
    opt = torch.optim.AdamW(compressor.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    t0, losses = time.perf_counter(), []
    for step in range(steps):
        pick = torch.randint(len(train_rows), (batch,), generator=gen)
        for group in opt.param_groups:  # cosine decay to 10%
            group["lr"] = lr * (0.1 + 0.45 * (1 + math.cos(math.pi * step / max(1, steps))))
        loss = fold_loss(model, train_rows[pick].to(device), pattern, compressor)
        if not torch.isfinite(loss):
            raise HeedfulError(f"training loss {loss.item()} at step {step}: no token sees a summary, or the "
                               "learning rate is too high")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(compressor.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step, loss.item())
    compressor.eval()
    compressor.requires_grad_(False)
    record = {"window": pattern.window, "rows": pattern.rows, "block": pattern.block, "steps": steps,
              "batch": batch, "lr": lr, "seed": seed, "seq_len": int(train_rows.shape[1]),
              "train_rows": int(len(train_rows)), "seconds": round(time.perf_counter() - t0, 1),
              "first_loss": round(sum(losses[:10]) / max(1, len(losses[:10])), 4),
              "last_loss": round(sum(losses[-10:]) / max(1, len(losses[-10:])), 4),
              "eval_loss": {k: None if v is None else round(v, 4)
                            for k, v in evaluate(model, eval_rows.to(device), pattern, compressor).items()}}
    return compressor, record
