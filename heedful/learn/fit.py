"""`heedful learn`: from recorded sessions to a picker.

The recorded sessions with at least one pin (a session where the person pinned nothing says
nothing about what matters) are split by session into a training part and a held-out part
(20 %, seeded); a fifth of the training sessions is kept aside to stop training and choose
the threshold: the one with the best F1 there, but at most 0.5 (the loss weighs positives by
negatives / positives, so 0.5 is its balanced point; on text arranged unlike the training
sessions the scores of what should be pinned drop, and a threshold fitted to near-perfectly
separated training arrangements, often 0.8 or more, then misses the last word of a fact). Every token gets the hidden states of the
chosen layers from plain forwards of the model over its session's ids in windows, and a
label (labels.py). The head is trained with a class-weighted loss (positives are rare).
The figures are measured on the held-out sessions: precision, recall and F1 at the
threshold, PR-AUC (average precision), and precision at the pin budget (in each session, the
budget - window - sinks highest-scored tokens, the most that could be pinned beside the
window).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import torch

from heedful.errors import HeedfulError
from heedful.learn.features import default_layers, hidden_states, num_layers
from heedful.learn.labels import token_labels
from heedful.learn.picker import FORMAT, Head, Picker, ahead, adapter_fingerprint, model_fingerprint, tokenizer_fingerprint


@dataclass
class Recorded:
    sid: int
    ids: list[int]
    labels: list[int]
    mask: list[int]
    pin_room: int  # budget - window - sinks of the session
    model: str | None
    x: torch.Tensor | None = None
    sources: list[str] | None = None


def read_sessions(store, session_ids=None) -> tuple[list[Recorded], int]:
    """The sessions with pins (and how many were read): token ids, labels, pin room."""
    infos = store.sessions()
    if session_ids:
        known = {i.id for i in infos}
        for sid in session_ids:
            if sid not in known:
                raise HeedfulError(f"--session {sid}: no such session in {store.path}")
        infos = [i for i in infos if i.id in set(session_ids)]
    out = []
    for info in infos:
        data = store.load(info.id)
        labels, mask, marks = token_labels(store.events(info.id), len(data.token_ids), data.token_sources)
        if not marks:
            continue
        cfg = info.config or {}
        budget, window, sinks = cfg.get("budget"), cfg.get("window"), cfg.get("sinks") or 0
        room = budget - window - sinks if isinstance(budget, int) and isinstance(window, int) else 0
        out.append(Recorded(info.id, list(data.token_ids), labels, mask, max(1, room), cfg.get("model") or info.model,
                            sources=list(data.token_sources)))
    return out, len(infos)


def split(sessions: list[Recorded], seed: int, held_out: float = 0.2):
    """(train, val, test) by session."""
    order = sorted(sessions, key=lambda r: r.sid)
    random.Random(seed).shuffle(order)
    n_test = max(1, round(held_out * len(order)))
    test, train = order[:n_test], order[n_test:]
    n_val = max(1, round(0.2 * len(train))) if len(train) >= 3 else 0
    val, train = train[:n_val], train[n_val:]
    return train, (val or train), test


@dataclass
class Stacked:
    h: torch.Tensor  # [n, d] every token of the sessions, one after the other
    ends: torch.Tensor  # per token: the first row past its session
    rows: torch.Tensor  # the rows that count (mask 1)
    y: torch.Tensor  # their labels

    def batch(self, lookahead: int, idx: torch.Tensor | None = None):
        rows = self.rows if idx is None else self.rows[idx]
        return ahead(self.h, lookahead, self.ends, rows)


def _stack(rs: list[Recorded]) -> Stacked:
    h = torch.cat([r.x for r in rs])
    ends = torch.cat([torch.full((len(r.ids),), 0) for r in rs])
    at = 0
    for r in rs:
        at += len(r.ids)
        ends[at - len(r.ids):at] = at
    y = torch.tensor([v for r in rs for v in r.labels], dtype=torch.float32)
    m = torch.tensor([v for r in rs for v in r.mask], dtype=torch.bool)
    return Stacked(h, ends, torch.nonzero(m).squeeze(1), y[m])


def average_precision(p: torch.Tensor, y: torch.Tensor) -> float:
    if y.sum() == 0:
        return float("nan")
    order = torch.argsort(p, descending=True)
    ys = y[order]
    tp = torch.cumsum(ys, 0)
    prec = tp / torch.arange(1, len(ys) + 1)
    return float((prec * ys).sum() / ys.sum())


def best_f1_threshold(p: torch.Tensor, y: torch.Tensor) -> float:
    order = torch.argsort(p, descending=True)
    ys, ps = y[order], p[order]
    tp = torch.cumsum(ys, 0)
    prec = tp / torch.arange(1, len(ys) + 1)
    rec = tp / max(1.0, float(ys.sum()))
    f1 = 2 * prec * rec / (prec + rec).clamp_min(1e-9)
    k = int(torch.argmax(f1))
    lower = float(ps[k + 1]) if k + 1 < len(ps) else 0.0
    return (float(ps[k]) + lower) / 2  # between the last token kept and the next


def _scores(head, st: Stacked, lookahead: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.sigmoid(head.forward_reduced(*st.batch(lookahead)))


def figures(picker: Picker, rs: list[Recorded]) -> dict:
    st = _stack(rs)
    with torch.no_grad():
        st.h = picker.head.reduce(st.h)
    y = st.y
    p = _scores(picker.head, st, picker.lookahead)
    pred = p >= picker.threshold
    tp = float((pred & (y > 0)).sum())
    precision = tp / max(1.0, float(pred.sum()))
    recall = tp / max(1.0, float(y.sum()))
    hits = total = 0
    for r in rs:
        ps = picker.score_states(r.x).clone()
        ps[~torch.tensor(r.mask, dtype=torch.bool)] = -1
        k = min(r.pin_room, len(r.ids))
        top = torch.topk(ps, k).indices
        hits += sum(r.labels[i] for i in top.tolist())
        total += k
    found = hits / max(1, int(y.sum()))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"sessions": len(rs), "tokens": len(y), "positives": int(y.sum()), "precision": round(precision, 4),
            "recall": round(recall, 4), "f1": round(f1, 4), "pr_auc": round(average_precision(p, y), 4),
            "precision_at_budget": round(hits / max(1, total), 4), "recall_at_budget": round(found, 4)}


def train_head(train: list[Recorded], val: list[Recorded], kind: str, epochs: int, seed: int, lookahead: int,
               progress=None):
    torch.manual_seed(seed)
    st, sv = _stack(train), _stack(val)
    y, yv = st.y, sv.y
    head = Head(st.h.shape[1], kind, lookahead=lookahead)
    with torch.no_grad():
        head.fit_basis(st.h[st.rows])
        st.h, sv.h = head.reduce(st.h), head.reduce(sv.h)  # training runs on the reduced states
    pos = float(y.sum())
    pos_weight = torch.tensor((len(y) - pos) / max(1.0, pos))
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    best, best_state = math.inf, None
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        head.train()
        for idx in torch.randperm(len(y), generator=g).split(2048):
            opt.zero_grad()
            loss = loss_fn(head.forward_reduced(*st.batch(lookahead, idx)), y[idx])
            loss.backward()
            opt.step()
        head.eval()
        with torch.no_grad():
            vl = float(loss_fn(torch.logit(_scores(head, sv, lookahead).clamp(1e-7, 1 - 1e-7)), yv))
        if vl < best:
            best, best_state = vl, {k: v.clone() for k, v in head.state_dict().items()}
        if progress:
            progress(1)
    head.load_state_dict(best_state)
    with torch.no_grad():
        threshold = best_f1_threshold(_scores(head, sv, lookahead), yv)
    return head, {"pos_weight": round(float(pos_weight), 2), "val_loss": round(best, 4)}, threshold


MAX_THRESHOLD = 0.5


def learn(store, lm, *, session_ids=None, layers=None, window=128, stride=64, kind="mlp", epochs=30, seed=0,
          lookahead=3, threshold=None, progress=None) -> tuple[Picker, dict]:
    """Trains a picker on the store's recorded sessions over `lm`; returns it with its
    training summary (held-out figures included). `progress(label, total)` -> a callable
    advancing a bar by n, or None."""
    t0 = time.perf_counter()
    sessions, read = read_sessions(store, session_ids)
    if not sessions or sum(sum(r.labels) for r in sessions) == 0:
        raise HeedfulError(f"{store.path}: no pinned tokens in {read} session{'s' * (read != 1)}: nothing to learn "
                           "from (pin what matters in some sessions first)")
    if len(sessions) < 2:
        raise HeedfulError(f"{store.path}: one session with pins; at least 2 are needed (one to learn from, one "
                           "to hold out)")
    n_layers = num_layers(lm.model)
    layers = sorted(set(layers)) if layers else default_layers(lm.model)
    if any(not 0 <= k < n_layers for k in layers):
        raise HeedfulError(f"--layers {','.join(map(str, layers))}: the model has layers 0 to {n_layers - 1}")
    max_pos = getattr(_text_cfg(lm.model), "max_position_embeddings", None) or window
    window = min(window, max_pos)
    stride = max(1, min(stride, window // 2))
    bar = progress("hidden states", sum(len(r.ids) for r in sessions)) if progress else None
    for r in sessions:
        r.x = hidden_states(lm.model, r.ids, layers, window, stride)
        if bar:
            bar(len(r.ids))
    t_features = time.perf_counter() - t0
    train, val, test = split(sessions, seed)
    if sum(sum(r.labels) for r in train) == 0:
        raise HeedfulError("the training sessions hold no pinned tokens (too few sessions with pins)")
    bar = progress("training", epochs) if progress else None
    head, info, best = train_head(train, val, kind, epochs, seed, lookahead, bar)
    info["val_best_f1_threshold"] = round(best, 6)
    if threshold is None:
        threshold = min(best, MAX_THRESHOLD)
    meta = {"format": FORMAT, "model": lm.name, "model_fingerprint": model_fingerprint(lm.model),
            "tokenizer_fingerprint": tokenizer_fingerprint(lm.tokenizer),
            "adapter_fingerprint": adapter_fingerprint(lm.model), "layers": layers, "window": window,
            "stride": stride, "head": {"kind": kind, "d_in": head.d_in, "hidden": head.hidden,
                                                               "lookahead": lookahead, "rank": head.rank},
            "threshold": round(threshold, 6)}
    picker = Picker(head, meta)
    summary = {"sessions": {"read": read, "with_pins": len(sessions), "train": len(train),
                            "val": len(val) if val is not train else 0, "held_out": len(test)},
               "tokens": sum(len(r.ids) for r in sessions), "positives": sum(sum(r.labels) for r in sessions),
               **info, "epochs": epochs, "seed": seed, "train": figures(picker, train),
               "held_out": figures(picker, test), "seconds": {"features": round(t_features, 2),
                                                              "total": round(time.perf_counter() - t0, 2)}}
    picker.meta["training"] = summary
    return picker, summary


def _text_cfg(model):
    cfg = model.config
    return cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg
