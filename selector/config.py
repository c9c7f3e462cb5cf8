"""A session's settings and what it reports: SessionConfig, Token, Stats.

A SessionConfig is what a person asked for (None: "the model's own" or "the default");
`resolve(config, model, tokenizer)` fills every None against the model once and validates
the whole, so the engine works from a frozen, complete config that it never writes into,
and the config event a store records is exactly what a replay needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

from heedful.errors import BudgetError, HeedfulError
from heedful.limits import MAX_INT, is_finite_number

# Attributes the tensor-parallel loader (heedful/models/parallel.py) sets on a model whose
# heads are split over ranks, read by the engine:
# - a function summing a tensor over the ranks: auto selection's credit pool adds the picks of
#   the other ranks' heads (encoding.py), so every rank keeps the rows one process would;
# - (rank, ranks): this rank holds the rank-th of `ranks` equal, contiguous shares of every
#   layer's key/value heads (transformers' colwise split of k_proj / v_proj); a learned fold
#   compressor keeps those heads' parameters (autofold.py).
SUM_ACROSS_RANKS = "heedful_sum_across_ranks"
RANK_HEADS = "heedful_rank_heads"

POOLS = ("credit", "fifo")  # auto selection's candidate pool: most valued by selection, or most recent
SCORES = ("minmax", "mean", "fla")  # block scoring: heedful.kernels.block_select.KINDS (checked by a test)
MIN_TEMPERATURE = 1e-4  # below it logits / T overflow to inf and the probabilities to NaN: use 0 (greedy)

# model_type of the transformers architectures whose attention output is gated (no sink).
GATED_TYPES = {"qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text", "qwen3_next"}


def sliding_window_of(text_config) -> int | None:
    """The sliding window of a model with windowed attention layers (Mistral's sliding_window,
    or layer_types naming sliding or chunked layers), else None."""
    types = getattr(text_config, "layer_types", None) or []
    windowed = any(t in ("sliding_attention", "chunked_attention") for t in types)
    if windowed or (not types and getattr(text_config, "model_type", "") == "mistral"):
        return getattr(text_config, "sliding_window", None) or getattr(text_config, "attention_chunk_size", None)
    return None


@dataclass(frozen=True)
class SessionConfig:
    model: str = "default"
    window: int | None = None  # None: min(256, (budget - sinks) // 2), room left for pins
    budget: int | None = None  # None: min(1024, the model's max_position_embeddings)
    sinks: int | None = None  # None: 0 for gated models, 4 for ungated ones
    seed: int = 0
    # sampling; None: the model's generation_config (greedy unless it says do_sample)
    temperature: float | None = None  # 0 = greedy
    top_p: float | None = None  # 1 = off
    top_k: int | None = None  # 0 = off
    min_p: float | None = None  # 0 = off
    repetition_penalty: float | None = None  # 1 = off (applies to greedy decoding too, as in transformers)
    # where generation stops (Session.generate with stop_at_eos); None: generation_config's
    # eos ids, the tokenizer's eos and, with a chat template, the template's end of turn
    stop_ids: tuple[int, ...] | None = None
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
    fold_compressor_digest: str | None = None  # its weights' sha256 (resolved from the folder; checked on replay)

    def __post_init__(self):
        if isinstance(self.stop_ids, list):  # from JSON
            object.__setattr__(self, "stop_ids", tuple(self.stop_ids))

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["stop_ids"] is not None:
            d["stop_ids"] = list(d["stop_ids"])
        return d

    def replace(self, **changes) -> "SessionConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ModelFacts:
    """What resolving a config needs to know of a model: read once, by `facts_of`."""

    gated: bool
    max_positions: int | None
    sliding_window: int | None
    recurrent: bool  # some layers keep a recurrent state (linear attention): no rewind, fold or recall in place
    generation: dict  # the sampling settings of its generation_config (do_sample, temperature, ...)
    stop_ids: tuple[int, ...]  # generation_config's eos ids and the tokenizer's


def text_config(config):
    return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config


def _ids(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def facts_of(model, tokenizer, gated: bool | None = None, extra_stop_ids=()) -> ModelFacts:
    text = text_config(model.config)
    if gated is None:
        gated = getattr(text, "model_type", "") in GATED_TYPES
    types = getattr(text, "layer_types", None) or []
    gc = getattr(model, "generation_config", None)
    generation = {k: getattr(gc, k, None) for k in ("do_sample", "temperature", "top_p", "top_k", "min_p",
                                                    "repetition_penalty")}
    stops = _ids(getattr(gc, "eos_token_id", None)) + _ids(getattr(tokenizer, "eos_token_id", None))
    stops += list(extra_stop_ids)
    return ModelFacts(gated=bool(gated), max_positions=getattr(text, "max_position_embeddings", None),
                      sliding_window=sliding_window_of(text),
                      recurrent=any(t in ("linear_attention", "conv") for t in types),
                      generation=generation, stop_ids=tuple(sorted(set(stops))))


def resolve(config: SessionConfig, facts: ModelFacts, digest=None) -> SessionConfig:
    """Every None filled from the model, then the whole checked (`validate`). `digest(folder)`
    gives a fold compressor's sha256 when the config has none yet."""
    c, g = config, facts.generation
    sinks = c.sinks if c.sinks is not None else (0 if facts.gated else 4)
    budget = c.budget if c.budget is not None else min(1024, facts.max_positions or 1024)
    window = c.window if c.window is not None else max(1, min(256, (budget - sinks) // 2))
    sampling = bool(g.get("do_sample"))

    def card(name, off):  # the model's value when its card samples, else off
        v = g.get(name)
        return v if sampling and v is not None else off

    temperature = c.temperature if c.temperature is not None else ((g.get("temperature") or 1.0) if sampling else 0.0)
    out = c.replace(
        sinks=sinks, budget=budget, window=window,
        temperature=float(temperature),
        top_p=float(c.top_p if c.top_p is not None else card("top_p", 1.0)),
        top_k=int(c.top_k if c.top_k is not None else card("top_k", 0)),
        min_p=float(c.min_p if c.min_p is not None else card("min_p", 0.0)),
        repetition_penalty=float(c.repetition_penalty if c.repetition_penalty is not None
                                 else g.get("repetition_penalty") or 1.0),
        stop_ids=c.stop_ids if c.stop_ids is not None else facts.stop_ids,
    )
    if out.fold_budget and out.fold_compressor != "mean" and out.fold_compressor_digest is None and digest:
        out = out.replace(fold_compressor_digest=digest(out.fold_compressor))
    validate(out, facts)
    return out


def validate(c: SessionConfig, facts: ModelFacts) -> None:
    """The one check of a complete config against its model (new sessions, `Session.set`)."""
    if not isinstance(c.seed, int) or isinstance(c.seed, bool) or not 0 <= c.seed <= MAX_INT:
        raise HeedfulError(f"--seed {c.seed!r}: must be an integer from 0 to 2**63 - 1")
    for name in ("window", "budget", "sinks", "auto_topk", "block_size", "prefill_chunk", "fold_budget", "fold_block"):
        v = getattr(c, name)
        if not isinstance(v, int) or isinstance(v, bool):
            raise BudgetError(f"--{name.replace('_', '-')} {v!r}: must be an integer")
    if c.window < 1:
        raise BudgetError(f"--window {c.window}: must be at least 1")
    if c.sinks < 0:
        raise BudgetError(f"--sinks {c.sinks}: must be >= 0")
    if c.budget < c.window + c.sinks:
        raise BudgetError(f"--budget {c.budget} is smaller than window {c.window} + sinks {c.sinks}")
    if facts.max_positions is not None and c.budget > facts.max_positions:
        raise BudgetError(f"--budget {c.budget} exceeds the model's max_position_embeddings ({facts.max_positions}): "
                          "compacted positions run from 0 to budget - 1")
    if facts.sliding_window is not None and c.budget > facts.sliding_window:
        # compacted positions keep every resident row inside a windowed layer's own window
        # only if the budget fits in it; past that, those layers would read less than is kept
        raise BudgetError(f"--budget {c.budget} exceeds the model's sliding window ({facts.sliding_window} "
                          f"positions): its windowed layers cannot read that many rows; use --budget <= "
                          f"{facts.sliding_window}")
    if c.auto_topk < 0 or c.block_size < 1:
        raise BudgetError("auto selection: topk must be >= 0 and block size >= 1")
    if c.auto_pool not in POOLS:
        raise HeedfulError(f"--auto-pool {c.auto_pool!r}: expected one of {', '.join(POOLS)}")
    if c.auto_score not in SCORES:
        raise HeedfulError(f"--auto-score {c.auto_score!r}: expected one of {', '.join(SCORES)}")
    if c.prefill_chunk < 1:
        raise BudgetError(f"prefill_chunk {c.prefill_chunk}: must be at least 1")
    check_sampling(c.temperature, c.top_p, top_k=c.top_k, min_p=c.min_p, repetition_penalty=c.repetition_penalty)
    if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in c.stop_ids):
        raise HeedfulError(f"stop_ids {list(c.stop_ids)!r}: must be token ids")
    if c.fold_budget:
        if c.fold_budget < 0 or c.fold_block < 1:
            raise BudgetError(f"--fold-budget {c.fold_budget} / --fold-block {c.fold_block}: must be >= 0 / >= 1")
        if c.window + c.sinks + c.fold_budget > c.budget:  # the window must still fit
            raise BudgetError(f"--fold-budget {c.fold_budget}: window {c.window} + sinks {c.sinks} + "
                              f"{c.fold_budget} summary rows is more than --budget {c.budget}")
        if c.fold_block > c.budget:  # a block's rows wait outside the budget until it has left
            raise BudgetError(f"--fold-block {c.fold_block}: at most --budget {c.budget}")
        if facts.recurrent:
            raise HeedfulError("--fold-budget needs a model whose layers are all full attention")


def check_sampling(temperature, top_p, where: str = "", *, top_k=0, min_p=0.0, repetition_penalty=1.0) -> None:
    if not is_finite_number(temperature) or temperature < 0:
        raise HeedfulError(f"{where}temperature {temperature!r}: must be a finite number >= 0")
    if 0 < temperature < MIN_TEMPERATURE:
        raise HeedfulError(f"{where}temperature {temperature!r}: must be 0 (greedy) or at least {MIN_TEMPERATURE}")
    if not is_finite_number(top_p) or not 0 < top_p <= 1:
        raise HeedfulError(f"{where}top_p {top_p!r}: must be in (0, 1]")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 0 <= top_k <= MAX_INT:
        raise HeedfulError(f"{where}top_k {top_k!r}: must be an integer >= 0 (0 = off)")
    if not is_finite_number(min_p) or not 0 <= min_p < 1:
        raise HeedfulError(f"{where}min_p {min_p!r}: must be in [0, 1)")
    if not is_finite_number(repetition_penalty) or not 0 < repetition_penalty <= 100:
        raise HeedfulError(f"{where}repetition_penalty {repetition_penalty!r}: must be in (0, 100] (1 = off)")


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
