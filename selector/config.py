"""A session's settings and what it reports: SessionConfig, Token, Stats."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from heedful.errors import HeedfulError
from heedful.limits import is_finite_number


# Attributes the tensor-parallel loader (heedful/models/parallel.py) sets on a model whose
# heads are split over ranks, read by the engine:
# - a function summing a tensor over the ranks: auto selection's credit pool adds the picks of
#   the other ranks' heads (encoding.py), so every rank keeps the rows one process would;
# - (rank, ranks): this rank holds the rank-th of `ranks` equal, contiguous shares of every
#   layer's key/value heads (transformers' colwise split of k_proj / v_proj); a learned fold
#   compressor keeps those heads' parameters (autofold.py).
SUM_ACROSS_RANKS = "heedful_sum_across_ranks"
RANK_HEADS = "heedful_rank_heads"


@dataclass
class SessionConfig:
    model: str = "default"
    window: int | None = None  # None: min(256, (budget - sinks) // 2), room left for pins
    budget: int | None = None  # None: min(1024, the model's max_position_embeddings)
    sinks: int | None = None  # None: 0 for gated models, 4 for ungated ones
    seed: int = 0
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    auto_topk: int = 0  # NSA-style blocks picked per step; 0 = off
    block_size: int = 64
    auto_pool: str = "credit"  # auto selection's pool: "credit" (what selection picks stays) or "fifo" (recent)
    auto_score: str = "minmax"  # block scoring: "minmax" (Quest bound), "mean", "fla" (heedful/kernels/block_select)
    prefill_chunk: int = 256
    fold_budget: int = 0  # rows of the budget for automatic fold summaries (autofold.py); 0 = off
    fold_block: int = 16  # tokens pooled into one summary row
    # how a block becomes its summary row: "mean", or the folder of a learned compressor
    # (compressor.py); the app resolves "auto" (the model folder's own compressor, if any)
    fold_compressor: str = "mean"
    fold_compressor_digest: str | None = None  # its weights' sha256 (set when loaded; checked on replay)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Token:
    index: int
    id: int
    text: str
    retained: bool


@dataclass
class Stats:
    tokens: int  # stream length
    generated: int
    resident: int  # KV rows per attention layer now in memory
    peak_resident: int
    evicted: int  # tokens whose rows were freed, in all
    tokens_per_s: float  # generation speed, time spent in the engine only
    window: int
    budget: int
    pinned: int  # pinned tokens that are resident
    resident_bytes: int  # bytes of the resident rows, all layers
    allocated_bytes: int  # bytes of the KV buffers (fixed: budget rows)


def check_sampling(temperature, top_p, where: str = "") -> None:
    if not is_finite_number(temperature) or temperature < 0:
        raise HeedfulError(f"{where}temperature {temperature!r}: must be a finite number >= 0")
    if not is_finite_number(top_p) or not 0 < top_p <= 1:
        raise HeedfulError(f"{where}top_p {top_p!r}: must be in (0, 1]")
