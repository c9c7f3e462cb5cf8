"""Gate and sink diagnostics for a loaded causal LM over a text.

Per attention layer:

* first-token share: the attention probability that goes to token 0, averaged over heads
  and over queries 1..L-1 (query 0 can only see token 0, so it is left out); computed from
  the attention probabilities themselves, with transformers' eager attention;
* max |activation|: the largest absolute value of the layer's output hidden state (massive
  activations go with attention sinks);
* mean gate: the mean of sigmoid(gate) of the output gate, for layers that have one (Qwen3.5,
  Qwen3-Next: q_proj emits [query | gate] per head; the gate half is read with a hook).

Averages over layers are reported alongside.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch


@dataclass
class LayerDiagnostics:
    layer: int
    kind: str  # "full_attention" | "linear_attention" | ...
    first_token_share: float | None
    max_activation: float
    mean_gate: float | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Diagnostics:
    tokens: int
    layers: list[LayerDiagnostics] = field(default_factory=list)

    @property
    def first_token_share(self) -> float | None:
        v = [x.first_token_share for x in self.layers if x.first_token_share is not None]
        return sum(v) / len(v) if v else None

    @property
    def uniform_share(self) -> float:
        """The first-token share attention spread evenly over the causal prefix would give:
        the mean over queries q = 1..L-1 of 1 / (q + 1). A sink shows as a share far above it."""
        if self.tokens < 2:
            return 1.0
        return sum(1.0 / (q + 1) for q in range(1, self.tokens)) / (self.tokens - 1)

    @property
    def max_activation(self) -> float:
        return max((x.max_activation for x in self.layers), default=float("nan"))

    @property
    def mean_gate(self) -> float | None:
        v = [x.mean_gate for x in self.layers if x.mean_gate is not None]
        return sum(v) / len(v) if v else None

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "first_token_share": self.first_token_share,
                "uniform_share": self.uniform_share,
                "max_activation": self.max_activation, "mean_gate": self.mean_gate,
                "layers": [x.to_dict() for x in self.layers]}


def _decoder_layers(model):
    inner = getattr(model, "model", model)
    inner = getattr(inner, "language_model", inner)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: cannot find the decoder layers")
    return list(layers)


def _has_gate(attn) -> bool:
    q = getattr(attn, "q_proj", None)
    cfg = getattr(attn, "config", None)
    if q is None or cfg is None:
        return False
    heads = getattr(cfg, "num_attention_heads", None)
    head_dim = getattr(attn, "head_dim", None) or getattr(cfg, "head_dim", None)
    return bool(heads and head_dim and q.out_features == 2 * heads * head_dim)


@torch.no_grad()
def diagnose(model, input_ids: torch.Tensor) -> Diagnostics:
    """Runs one forward pass over input_ids [1, L] and returns the diagnostics."""
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    layers = _decoder_layers(model)
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    layer_types = getattr(cfg, "layer_types", None) or ["full_attention"] * len(layers)
    probs: dict[int, torch.Tensor] = {}
    gates: dict[int, float] = {}
    acts: dict[int, float] = {}
    hooks = []

    def attn_hook(i):
        def hook(module, args, output):
            if isinstance(output, tuple) and len(output) > 1 and isinstance(output[1], torch.Tensor):
                probs[i] = output[1].detach().float()
        return hook

    def gate_hook(i, attn):
        head_dim = getattr(attn, "head_dim", None) or cfg.head_dim

        def hook(module, args, output):
            g = output.view(*output.shape[:-1], -1, head_dim * 2)[..., head_dim:]
            gates[i] = float(torch.sigmoid(g.float()).mean())
        return hook

    def layer_hook(i):
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            acts[i] = float(h.detach().float().abs().max())
        return hook

    for i, layer in enumerate(layers):
        attn = getattr(layer, "self_attn", None)
        if attn is not None:
            hooks.append(attn.register_forward_hook(attn_hook(i)))
            if _has_gate(attn):
                hooks.append(attn.q_proj.register_forward_hook(gate_hook(i, attn)))
        hooks.append(layer.register_forward_hook(layer_hook(i)))

    previous = getattr(model.config, "_attn_implementation", None)
    switched = previous != "eager"
    if switched:
        model.set_attn_implementation("eager")
    try:
        model(input_ids=input_ids.to(next(model.parameters()).device), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
        if switched and previous is not None:
            try:
                model.set_attn_implementation(previous)
            except Exception:  # a custom registered function: set the config back directly
                model.config._attn_implementation = previous
    L = input_ids.shape[-1]
    out = Diagnostics(tokens=L)
    for i in range(len(layers)):
        share = None
        if i in probs:
            p = probs[i]  # [B, H, Lq, Lk]
            share = float(p[..., 1:, 0].mean()) if L > 1 else float(p[..., 0].mean())
        out.layers.append(LayerDiagnostics(layer=i, kind=layer_types[i] if i < len(layer_types) else "?",
                                           first_token_share=share, max_activation=acts.get(i, math.nan),
                                           mean_gate=gates.get(i)))
    return out


def diagnose_text(model, tokenizer, text: str, max_tokens: int | None = None) -> Diagnostics:
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    if ids.shape[-1] == 0:
        raise ValueError("the text is empty after tokenisation")
    limit = max_tokens or getattr(model.config, "max_position_embeddings", None)
    if limit:
        ids = ids[:, :limit]
    return diagnose(model, ids)


def format_table(d: Diagnostics) -> str:
    def f(v, fmt):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    lines = [f"tokens: {d.tokens}", f"{'layer':>5}  {'kind':<16} {'first-token share':>17} {'max |act|':>10} "
             f"{'mean gate':>9}"]
    for x in d.layers:
        lines.append(f"{x.layer:>5}  {x.kind:<16} {f(x.first_token_share, '.4f'):>17} "
                     f"{f(x.max_activation, '.2f'):>10} {f(x.mean_gate, '.4f'):>9}")
    lines.append(f"{'all':>5}  {'(mean / max)':<16} {f(d.first_token_share, '.4f'):>17} "
                 f"{f(d.max_activation, '.2f'):>10} {f(d.mean_gate, '.4f'):>9}")
    lines.append(f"(attention spread evenly over the prefix would give a first-token share of "
                 f"{d.uniform_share:.4f})")
    return "\n".join(lines)
