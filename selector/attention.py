"""The "heedful" attention function, registered with transformers' AttentionInterface.

transformers calls it for every attention layer with q [B, Hq, L, D] (the chunk's new
tokens) and the cache's k, v [B, Hkv, N, D]: the first N slots of the layer's buffers
(cache.py), keys rotated. The session passes a `heedful_plan` keyword through the model's
forward: the mask over those slots (holes, the chunk's causal tail) and, with auto
selection, which rows each KV head may read. Without a plan (plain model use: training,
inspection, stock comparison) k and v are in stream order and this is causal attention.

Paths:
- every resident row attended (auto selection off, the default): the retained set is the
  attended set, so this is dense attention over the occupied slots - one SDPA call, exact,
  with no mask at a decode step (slots are packed: no hole, one query);
- auto selection on: the rows are gathered in rank order (`plan.order`), and the NSA-style
  top-k blocks of the candidate pool, per KV head, merged with sinks + pins + window, go to
  heedful.kernels.sparse_attention (Triton on CUDA, the PyTorch reference elsewhere). The
  blocks' summaries are kept from step to step (one BlockSummaries per layer): a step redoes
  only the blocks whose rows arrived, left or were re-rotated. With `AutoSelect.hits` set,
  every layer also counts, per row, the KV heads that picked it (one index_add on the
  device, no attention matrix): what the credit pool (policy.py) learns from.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

NAME = "heedful"


@dataclass
class AutoSelect:
    """NSA-style selection for one forward: the candidate pool is rows [pool_start,
    pool_end) of the resident buffer; `base_rows` (sinks, pins, window: always attended)
    are row numbers in [0, N - L)."""

    base_rows: torch.Tensor  # [K0] int64
    pool_start: int
    pool_end: int
    topk: int  # blocks
    block_size: int
    summary: str = "minmax"  # how blocks are scored: "minmax", "mean" or "fla" (heedful/kernels/block_select)
    # Per layer index, the BlockSummaries kept from step to step (HeedfulCache.summaries),
    # and the first row whose key changed since they were last updated (None: no row
    # moved; rows appended since are summarized anyway). summaries=None recomputes the
    # pool's summaries in every layer at every step (reads the whole pool).
    summaries: dict | None = None
    stale_from: int | None = None
    # When set: [N + 1] fp32 on the device, zeros; each layer adds 1 at 1 + r for every KV
    # head whose top-k picked row r (slot 0 takes the -1 padding). Summed over layers;
    # `selections` counts the (layer, batch, KV head) selections that added to it.
    hits: torch.Tensor | None = None
    selections: int = 0


@dataclass
class StepPlan:
    # [L, N] bool over the slots, or None: every slot, and one query (cache.Step)
    mask: torch.Tensor | None = None
    # the slot of each row by rank, the chunk's rows last: set for auto selection and collect
    order: torch.Tensor | None = None
    auto: AutoSelect | None = None
    # When set, per layer: the attention the last query gave to each row, averaged over
    # query heads ([N] fp32), for the UI's heat overlay and diagnostics.
    collect: dict | None = None
    # When set, per layer: the rows the last query attended, for tests and the UI.
    attended: dict | None = field(default=None)


def _dense_causal_tail(q, k, v, scale):
    """Each query i of the chunk (L rows) sees rows [0, N - L + i]."""
    n_q, n_k = q.shape[-2], k.shape[-2]
    if n_q == 1:
        mask = None
    else:
        rows = torch.arange(n_k, device=q.device)
        mask = rows[None, :] <= (n_k - n_q + torch.arange(n_q, device=q.device))[:, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=k.shape[1] != q.shape[1])


def merge_indices(base_rows: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """base_rows [K0] (shared by every head) + selected [B, Hkv, K1] (-1 padded) ->
    [B, Hkv, K0 + K1] sorted, each row once, -1 padding at the end."""
    b, h, _ = selected.shape
    base = base_rows.to(selected.device, torch.int64).expand(b, h, -1)
    allrows = torch.cat([base, selected.to(torch.int64)], dim=-1)
    big = torch.iinfo(torch.int64).max
    allrows = torch.where(allrows < 0, torch.full_like(allrows, big), allrows)
    srt, _ = allrows.sort(dim=-1)
    dup = torch.zeros_like(srt, dtype=torch.bool)
    dup[..., 1:] = srt[..., 1:] == srt[..., :-1]
    srt = torch.where(dup, torch.full_like(srt, big), srt)
    srt, _ = srt.sort(dim=-1)
    return torch.where(srt == big, torch.full_like(srt, -1), srt).to(torch.int32)


def _collect_last_query(plan, layer_idx, q, k, scale, attended_rows=None):
    """Softmax weights of the chunk's last query over all N rows, averaged over heads."""
    qh = q[:, :, -1:].float()  # [B, Hq, 1, D]
    group = q.shape[1] // k.shape[1]
    kk = k.float().repeat_interleave(group, dim=1)  # [B, Hq, N, D]
    scores = (qh @ kk.transpose(-1, -2)).squeeze(-2) * scale  # [B, Hq, N]
    if attended_rows is not None:  # [B, Hkv, K] -> mask rows a head did not read
        allowed = torch.zeros(scores.shape[0], k.shape[1], scores.shape[-1] + 1, dtype=torch.bool, device=q.device)
        idx = attended_rows.to(torch.int64).clamp(min=-1) % (scores.shape[-1] + 1)
        allowed.scatter_(-1, idx, True)
        allowed = allowed[..., :-1]
        allowed[..., -q.shape[2]:] = True
        scores = scores.masked_fill(~allowed.repeat_interleave(group, dim=1), float("-inf"))
    probs = scores.softmax(-1).mean(dim=1)[0]  # [N]
    plan.collect[layer_idx] = probs


def heedful_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                      heedful_plan: StepPlan | None = None, **kwargs):
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    plan = heedful_plan
    indices = None
    if plan is None:
        out = _dense_causal_tail(query, key, value, scale)
    elif plan.auto is None:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=plan.mask, scale=scale,
                                             enable_gqa=key.shape[1] != query.shape[1])
        if plan.collect is not None:
            key = key.index_select(2, plan.order)
    else:
        key, value = key.index_select(2, plan.order), value.index_select(2, plan.order)
        from heedful.kernels import BlockSummaries, select_topk_blocks, sparse_attention

        a = plan.auto
        if a.pool_end > a.pool_start and a.topk > 0:
            kept = None
            if a.summaries is not None:
                kept = a.summaries.get(module.layer_idx)
                if kept is None:
                    kept = a.summaries[module.layer_idx] = BlockSummaries(a.block_size, a.summary)
                changed = kept.end if a.stale_from is None else min(a.stale_from, kept.end)
                kept.update(key, a.pool_start, a.pool_end, changed_from=changed)
            picked = select_topk_blocks(query, key, a.pool_start, a.pool_end, a.block_size, a.topk,
                                        kind=a.summary, summaries=kept, scale=scale)
            if a.hits is not None:
                flat = picked.reshape(-1).long() + 1
                a.hits.index_add_(0, flat, torch.ones(flat.shape, dtype=a.hits.dtype, device=a.hits.device))
                a.selections += picked.shape[0] * picked.shape[1]
        else:
            picked = torch.full((query.shape[0], key.shape[1], 0), -1, dtype=torch.int32, device=query.device)
        indices = merge_indices(a.base_rows, picked)
        out = sparse_attention(query, key, value, indices, scale)
    if plan is not None and plan.collect is not None:
        _collect_last_query(plan, module.layer_idx, query, key, scale, indices)
    if plan is not None and plan.attended is not None and indices is not None:
        plan.attended[module.layer_idx] = indices
    return out.transpose(1, 2).contiguous(), None


_registered = False


def register() -> None:
    """Registers "heedful" with transformers (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, heedful_attention)
    _registered = True


@contextlib.contextmanager
def implementation(model, name: str):
    """The model's attention implementation for the steps inside (transformers reads
    `config._attn_implementation` at every forward), restored after."""
    before = model.config._attn_implementation
    model.config._attn_implementation = name
    try:
        yield
    finally:
        model.config._attn_implementation = before
