"""The "heedful" attention function, registered with transformers' AttentionInterface, and
the attention paths it runs.

transformers calls it for every attention layer with q [B, Hq, L, D] (the chunk's new
tokens) and the cache's k, v [B, Hkv, N, D]: the first N slots of the layer's buffers
(cache.py), keys rotated. The session passes a `heedful_plan` keyword through the model's
forward; the plan carries the path chosen when the step was planned (residency.py), so the
function itself only hands over: one small object per way of attending, as vLLM's attention
backends are, and no branching on the path inside it.

- `Causal`: no plan (plain model use: training, inspection, stock comparison); k and v are
  in stream order: causal SDPA.
- `Dense`: every resident row attended (pins + window, the default on CPU): one SDPA call
  over the occupied slots, exact, with no mask at a decode step (slots packed, one query);
  at a padded step (static.py, `--cuda-graph`) over every slot, the mask naming the rows.
- `Resident`: the same rows through the sparse kernel (the default on CUDA with Triton): the
  index set is the resident slots, read in place at a decode step; a chunk's rows are
  gathered in rank order (`plan.order`) for the prefill kernel. At a padded step (static.py)
  the index set is a device buffer of capacity entries, -1 padded, the new row's slot in it.
- `Selected`: auto selection on: the rows gathered in rank order, the NSA-style top-k blocks
  of the candidate pool per KV head (block summaries kept from step to step, one
  BlockSummaries per layer), merged with sinks + pins + window, to the sparse kernel. With
  `AutoSelect.hits` set, every layer counts, per row, the KV heads that picked it (one
  index_add on the device): what the credit pool (policy.py) learns from.
- `Collecting(path)`: also keeps the last query's attention over the rows, by rank (the UI's
  heat overlay, H2O).

The kernels (Triton or the PyTorch references) are chosen once per session:
`heedful.kernels.backend_for`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from heedful.errors import HeedfulError
from heedful.kernels import BlockSummaries, backend_for

NAME = "heedful"
CHOICES = ("auto", "sdpa", "triton")  # --attention; HEEDFUL_ATTENTION sets the default (tests)


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
    path: object = None  # the attention path of this step (one of the classes below)
    # [L, N] bool over the slots, or None: every slot, and one query (cache.Step)
    mask: torch.Tensor | None = None
    # the slot of each row by rank, the chunk's rows last: set when the path reads in rank order
    order: torch.Tensor | None = None
    auto: AutoSelect | None = None
    # When set, per layer: the attention the last query gave to each row, averaged over
    # query heads ([N] fp32), for the UI's heat overlay and diagnostics.
    collect: dict | None = None
    # When set, per layer: the rows the last query attended, for tests and the UI.
    attended: dict | None = field(default=None)
    slots: object = None  # the cache's Step: the new rows' slots, the resident slots by rank
    # The padded decode step (static.py): its device buffers; k and v are then every slot
    # of the cache, `mask` [1, capacity] and `static.index` [1, 1, capacity] (-1 padded)
    # name the resident slots and the new row's
    static: object = None


def _sdpa(q, k, v, mask, scale):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=k.shape[1] != q.shape[1])


class Causal:
    """Each query i of the chunk (L rows) sees rows [0, N - L + i]."""

    def __call__(self, module, q, k, v, plan, scale):
        n_q, n_k = q.shape[-2], k.shape[-2]
        mask = None
        if n_q > 1:
            rows = torch.arange(n_k, device=q.device)
            mask = rows[None, :] <= (n_k - n_q + torch.arange(n_q, device=q.device))[:, None]
        return _sdpa(q, k, v, mask, scale), None


class Dense:
    """Every resident row: SDPA over the occupied slots (holes and the chunk's tail masked)."""

    reads_in_order = False

    def __call__(self, module, q, k, v, plan, scale):
        return _sdpa(q, k, v, plan.mask, scale), None


class Resident:
    """Every resident row through the sparse kernel: at a decode step the index set is the
    resident slots, read in place, and the new row's slot is the query's own; a chunk is
    read in rank order (gathered) by the prefill kernel. Every row is attended (None)."""

    reads_in_order = True  # the slots by rank: the decode's index set, the chunk's gather

    def __init__(self, kernels):
        self.kernels = kernels

    def __call__(self, module, q, k, v, plan, scale):
        b, h, n_new = q.shape[0], k.shape[1], q.shape[2]
        if plan.static is not None:  # the new row is in the index set: nothing read from the host
            return self.kernels.sparse_decode(q, k, v, plan.static.index.expand(b, h, -1), scale), None
        if n_new == 1:
            idx = plan.order[:-1].to(torch.int32).expand(b, h, -1)
            return self.kernels.sparse_decode(q, k, v, idx, scale, extra_row=int(plan.slots.slots[0])), None
        k, v = k.index_select(2, plan.order), v.index_select(2, plan.order)
        past = k.shape[2] - n_new
        idx = torch.arange(past, device=q.device, dtype=torch.int32).expand(b, h, past)
        return self.kernels.sparse_prefill(q, k, v, idx, scale), None


class Selected:
    """Auto selection: sinks + pins + window and the top-k blocks of the pool, per KV head."""

    reads_in_order = True

    def __init__(self, kernels):
        self.kernels = kernels

    def __call__(self, module, q, k, v, plan, scale):
        k, v = k.index_select(2, plan.order), v.index_select(2, plan.order)
        a = plan.auto
        if a.pool_end > a.pool_start and a.topk > 0:
            kept = None
            if a.summaries is not None:
                kept = a.summaries.get(module.layer_idx)
                if kept is None:
                    kept = a.summaries[module.layer_idx] = BlockSummaries(a.block_size, a.summary)
                changed = kept.end if a.stale_from is None else min(a.stale_from, kept.end)
                kept.update(k, a.pool_start, a.pool_end, changed_from=changed)
            picked = self.kernels.select_topk_blocks(q, k, a.pool_start, a.pool_end, a.block_size, a.topk,
                                                     kind=a.summary, summaries=kept, scale=scale)
            if a.hits is not None:
                flat = picked.reshape(-1).long() + 1
                a.hits.index_add_(0, flat, torch.ones(flat.shape, dtype=a.hits.dtype, device=a.hits.device))
                a.selections += picked.shape[0] * picked.shape[1]
        else:
            picked = torch.full((q.shape[0], k.shape[1], 0), -1, dtype=torch.int32, device=q.device)
        indices = merge_indices(a.base_rows, picked)
        return self.kernels.sparse_attention(q, k, v, indices, scale), _Ordered(indices, k)


@dataclass
class _Ordered:
    """What a path attended when it read the rows in rank order: the index set, and the keys
    in that order (Collecting reads them)."""

    indices: torch.Tensor
    keys: torch.Tensor


class Collecting:
    """A path, plus the last query's attention over the rows by rank (plan.collect)."""

    reads_in_order = True

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, module, q, k, v, plan, scale):
        out, attended = self.inner(module, q, k, v, plan, scale)
        if isinstance(attended, _Ordered):
            keys, indices = attended.keys, attended.indices
        else:  # every row attended: the keys as the slots hold them, by rank
            keys, indices = k.index_select(2, plan.order), None
        plan.collect[module.layer_idx] = _last_query_weights(q, keys, scale, indices)
        return out, attended


def _last_query_weights(q, k, scale, attended_rows=None):
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
    return scores.softmax(-1).mean(dim=1)[0]  # [N]


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


class Paths:
    """The paths of one session, chosen once: the resident path (Dense or Resident), the
    selection path, and their collecting forms; `for_step` picks one when a step is planned."""

    def __init__(self, resident, selected):
        self.resident, self.selected = resident, selected
        self._collecting = {id(p): Collecting(p) for p in (resident, selected)}

    def for_step(self, auto, collect: bool):
        p = self.selected if auto is not None else self.resident
        return self._collecting[id(p)] if collect else p

    def needs_order(self, auto, collect: bool) -> bool:
        """Whether the step's plan must carry the slots in rank order."""
        return self.for_step(auto, collect).reads_in_order


def path_for(choice: str | None, device) -> Paths:
    """--attention: "sdpa" (dense SDPA for pins + window; auto selection through the
    PyTorch kernel references), "triton" (the Triton kernels for both; on CPU under
    TRITON_INTERPRET=1), or "auto": Triton on CUDA where it imports, SDPA elsewhere."""
    choice = choice or os.environ.get("HEEDFUL_ATTENTION", "").strip().lower() or "auto"
    if choice not in CHOICES:
        raise HeedfulError(f"--attention {choice!r}: expected one of {', '.join(CHOICES)}")
    if choice == "auto":
        kernels = backend_for(device)
        choice = "triton" if kernels.name == "triton" else "sdpa"
    try:
        kernels = backend_for(device, "triton" if choice == "triton" else "reference")
    except RuntimeError as e:
        raise HeedfulError(f"--attention triton: {e}") from None
    resident = Resident(kernels) if choice == "triton" else Dense()
    return Paths(resident, Selected(kernels))


CAUSAL = Causal()


def heedful_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                      heedful_plan: StepPlan | None = None, **kwargs):
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    plan = heedful_plan
    out, attended = (plan.path if plan is not None else CAUSAL)(module, query, key, value, plan, scale)
    if plan is not None and plan.attended is not None and attended is not None:
        plan.attended[module.layer_idx] = attended.indices if isinstance(attended, _Ordered) else attended
    return out.transpose(1, 2).contiguous(), None


_registered = False


def register() -> None:
    """Registers "heedful" with transformers (idempotent)."""
    global _registered
    if not _registered:
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
