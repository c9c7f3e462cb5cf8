"""`heedful bench stream`: per-token decode latency, aten ops per step and KV memory, heedful
(pins + window, bounded budget) against stock transformers generation with a full cache, same
model, one run. The two decode loops are interleaved step by step, so both see the same
machine load. The claims checked: heedful's step is as lean as stock's, its cost per token
is flat and its memory constant, while the full cache grows until the model's context limit."""

from __future__ import annotations

import json
import statistics
import sys
import time

import click
import torch

from heedful.app.options import model_options
from heedful.selector.attention import implementation  # the runs share one model
from heedful.selector.cache import cache_kwargs
from heedful.bench.presets import PRESETS, preset_model, synthetic_model
from heedful.limits import MAX_GENERATE

PROMPT = "The vault code is 4821. Remember it. " * 4
OPS_STEPS = 10  # decode steps counted after the timed ones


def _median_before(lat: list[float], mark: int, span: int) -> float | None:
    """Median latency (ms) of the `span` steps ending at step `mark`."""
    if len(lat) < mark:
        return None
    return 1000 * statistics.median(lat[max(0, mark - span):mark])


def _kv_bytes(cache) -> int:
    total = 0
    for layer in cache.layers:
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if t is not None:
                total += t.numel() * t.element_size()
    return total


def _op_counter():
    """A dispatch mode that counts aten ops: per decode step, a figure that does not depend on
    the machine's load, and on a GPU at batch 1 (launch bound) what the step costs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += 1
            return func(*args, **(kwargs or {}))

    return Count()



STOCK_MODES = ("auto", "dynamic", "static", "compiled")


def stock_mode(mode: str, device) -> str:
    """auto: a static cache with torch.compile on CUDA (the fair comparison for a captured
    step), transformers' DynamicCache elsewhere."""
    if mode == "auto":
        return "compiled" if torch.device(device).type == "cuda" else "dynamic"
    return mode


class StockRun:
    """transformers' own decode loop, SDPA, greedy: a DynamicCache holding every token
    ("dynamic"), or a StaticCache of the run's length ("static"), its step compiled with
    torch.compile's CUDA-graph mode ("compiled": reduce-overhead)."""

    def __init__(self, model, ids: list[int], mode: str = "dynamic", steps: int = 0):
        from transformers import DynamicCache, StaticCache

        self.model, self.mode = model, mode
        self.limit = model.config.max_position_embeddings
        self.length = len(ids)
        device = model.device
        self.forward = model.forward
        # torch.compile's CUDA graphs under no_grad, as transformers' static-cache recipe runs them
        self.grad_off = torch.no_grad if mode == "compiled" else torch.inference_mode
        with implementation(model, "sdpa"), self.grad_off():
            if mode == "dynamic":
                self.cache, extra = DynamicCache(config=model.config), {}
            else:
                size = min(self.limit, len(ids) + steps + OPS_STEPS + 2)
                self.limit = size
                self.cache = StaticCache(config=model.config, max_cache_len=size)
                extra = {"cache_position": torch.arange(len(ids), device=device)}
                if mode == "compiled":
                    self.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=False)
            out = model(input_ids=torch.tensor([ids], device=device), **cache_kwargs(model, self.cache),
                        use_cache=True, logits_to_keep=1, **extra)
        self.next = int(out.logits[0, -1].argmax())

    @property
    def done(self) -> bool:
        return self.length + 1 >= self.limit

    def step(self) -> None:
        device = self.model.device
        extra = {} if self.mode == "dynamic" else {"cache_position": torch.tensor([self.length], device=device)}
        with implementation(self.model, "sdpa"), self.grad_off():
            out = self.forward(input_ids=torch.tensor([[self.next]], device=device),
                               **cache_kwargs(self.model, self.cache), use_cache=True, logits_to_keep=1, **extra)
            self.next = int(out.logits[0, -1].argmax())
        self.length += 1

    def kv_bytes(self) -> int:
        return _kv_bytes(self.cache)


def context_prompt(tok, tokens: int) -> str:
    """PROMPT, or filler text of about `tokens` tokens (PROMPT first): the context both runs
    start decoding at."""
    if tokens <= 0:
        return PROMPT
    text = PROMPT
    while len(tok(text)["input_ids"]) < tokens:
        text += text
    while (n := len(tok(text)["input_ids"])) > tokens:  # cut by characters (decode may add spaces)
        text = text[: max(1, min(len(text) - 1, len(text) * tokens // n))]
    return text


class HeedfulRun:
    """heedful's engine: the prompt's first `pins` tokens pinned, a window and a budget."""

    def __init__(self, model, tok, window: int, budget: int, pins: int, prompt: str = PROMPT):
        from heedful.selector.config import GATED_TYPES
        from heedful.selector.session import Session

        self.session = s = Session(model, tok, window=window, budget=budget,
                                   gated=getattr(model.config, "model_type", "") in GATED_TYPES)
        with implementation(model, "heedful"):
            s.prompt(prompt)
            if pins:
                s.pin((0, min(pins, len(s))))
        self.model = model
        self._it = s.generate(MAX_GENERATE)

    def step(self) -> None:
        with implementation(self.model, "heedful"):
            next(self._it)

    def kv_bytes(self) -> int:
        return self.session.cache.allocated_bytes()


def _timed(run, sync) -> float:
    t0 = time.perf_counter()
    run.step()
    sync()
    return time.perf_counter() - t0


def _ops(run) -> float:
    with _op_counter() as count:
        for _ in range(OPS_STEPS):
            run.step()
    return count.n / OPS_STEPS


def measure(model, tok, n: int, early: int, span: int, window: int, budget: int, pins: int, stock: bool,
            bar=None, context: int = 0, stock_as: str = "auto", ops: bool = True) -> dict:
    """Both decode loops, interleaved step by step; figures per run and the step counts.
    `context`: tokens of prompt both runs read before decoding (0: PROMPT alone)."""
    device = next(model.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    prompt = context_prompt(tok, context)
    h = HeedfulRun(model, tok, window, budget, pins, prompt)
    mode = stock_mode(stock_as, device)
    s = StockRun(model, tok(prompt)["input_ids"], mode, n) if stock else None
    lat = {"heedful": [], "stock": []}
    kv = {"heedful": {}, "stock": {}}
    for step in range(1, n + 1):
        lat["heedful"].append(_timed(h, sync))
        if s is not None and not s.done:
            lat["stock"].append(_timed(s, sync))
        if step in (early, n):
            kv["heedful"][step] = h.kv_bytes()
            if s is not None and len(lat["stock"]) == step:
                kv["stock"][step] = s.kv_bytes()
        if bar is not None:
            bar.update(1)
    out = {"tokens": n, "early": early, "span": span, "device": str(device), "window": window, "budget": budget,
           "pins": pins, "context": len(h.session) - n, "stock_mode": mode if stock else None}
    runs = [("heedful", h)] + ([("stock", s)] if s is not None else [])
    for name, run in runs:
        steps = len(lat[name])
        ops = None if not ops or (name == "stock" and (s.length + OPS_STEPS + 1 >= s.limit
                                                          or s.mode == "compiled")) else _ops(run)
        out[name] = {"ms_early": _median_before(lat[name], early, span),
                     "ms_end": _median_before(lat[name], steps, span) if steps >= span else None,
                     "steps": steps, "ops_per_step": ops, "kv_bytes_early": kv[name].get(early),
                     "kv_bytes_end": run.kv_bytes()}
    out["latency"] = lat  # seconds per step, for the plot
    # each heedful step over the stock step right after it, median over the early span: the
    # two steps of a pair ran under the same load, so this ratio is steadier than the ratio of
    # the two medians on a busy machine
    pairs = [a / b for a, b in zip(lat["heedful"][max(0, early - span):early], lat["stock"][max(0, early - span):early])]
    out["paired_early"] = statistics.median(pairs) if pairs and len(lat["stock"]) >= early else None
    st = h.session.residency.static
    out["heedful"]["cuda_graph"] = st.stats() if st is not None else None
    out["heedful"]["peak_resident"] = h.session.stats().peak_resident
    out["heedful"]["stream_bytes_per_token"] = h.session.stream_bytes() / len(h.session)
    return out


def _fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def report(r: dict) -> None:
    e = r["early"]
    click.echo(f"\nper-token decode latency (median of {r['span']} steps, ms), aten ops per step and KV bytes; "
               f"window {r['window']}, budget {r['budget']}, {r['pins']} prompt tokens pinned; runs interleaved")
    click.echo(f"{'run':<10}{'@' + str(e):>10}{'@end':>10}{'end/early':>11}{'ops/step':>10}{'KV@' + str(e):>14}"
               f"{'KV@end':>14}  end")
    for name in ("heedful", "stock"):
        x = r.get(name)
        if x is None:
            continue
        ratio = x["ms_end"] / x["ms_early"] if x["ms_end"] and x["ms_early"] else None
        click.echo(f"{name:<10}{_fmt(x['ms_early']):>10}{_fmt(x['ms_end']):>10}{_fmt(ratio):>11}"
                   f"{_fmt(x['ops_per_step'], '.0f'):>10}{_fmt(x['kv_bytes_early'], ','):>14}"
                   f"{x['kv_bytes_end']:>14,}  @{x['steps']}")
    h, s = r["heedful"], r.get("stock")
    if s is not None:
        if h["ms_early"] and s["ms_early"]:
            click.echo(f"heedful / stock at {e} tokens: {h['ms_early'] / s['ms_early']:.2f}x the time per token "
                       f"(median of step pairs: {_fmt(r['paired_early'], '.3f')}x)")
        if h["ms_end"] and s["ms_end"]:
            click.echo(f"stock at {s['steps']} / heedful at {h['steps']}: {s['ms_end'] / h['ms_end']:.2f}x "
                       "faster per token")
        if h["ops_per_step"] and s["ops_per_step"]:
            click.echo(f"ops per step, heedful / stock: {h['ops_per_step'] / s['ops_per_step']:.3f}")
    click.echo(f"context before decoding: {r['context']} tokens; stock cache: {r['stock_mode']}; heedful's padded "
               f"step (--cuda-graph): {h['cuda_graph'] or 'off'}")
    click.echo(f"heedful peak resident rows: {h['peak_resident']} (budget {r['budget']})")
    click.echo(f"heedful stream bookkeeping in RAM: {h['stream_bytes_per_token']:.0f} bytes per token "
               "(ids, texts, offsets: grows with the stream; the KV above does not)")


def plot(r: dict, path: str) -> None:
    """Per-token latency (rolling median) against generated tokens, both runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, rx) = plt.subplots(2, 1, figsize=(7, 5.2), sharex=True, height_ratios=[3, 2])
    w = max(1, r["span"] // 2)
    lat = r["latency"]
    for name, colour in (("heedful", "tab:blue"), ("stock", "tab:gray")):
        xs = lat.get(name) or []
        if len(xs) >= w:
            ax.plot(range(w, len(xs) + 1), [1000 * statistics.median(xs[i - w:i]) for i in range(w, len(xs) + 1)],
                    color=colour, label=name)
    ax.set_ylabel(f"ms per token\n(median of {w})")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{r['model']}\n{r['device']}, window {r['window']}, budget {r['budget']}, {r['pins']} pins",
                 fontsize=8)
    ax.legend()
    pairs = [a / b for a, b in zip(lat["heedful"], lat.get("stock") or [])]
    if len(pairs) >= w:  # each heedful step over the stock step next to it: the load cancels
        rx.plot(range(w, len(pairs) + 1), [statistics.median(pairs[i - w:i]) for i in range(w, len(pairs) + 1)],
                color="tab:blue")
    rx.axhline(1.0, color="tab:gray", lw=0.8)
    rx.set_ylabel("heedful / stock\n(paired steps)")
    rx.set_xlabel("generated tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command()
@click.option("-n", "--tokens", "n", type=click.IntRange(min=100), default=20_000, show_default=True,
              help="Tokens to generate in each run.")
@click.option("--early", type=click.IntRange(min=50), default=1_000, show_default=True,
              help="The early mark (generated tokens) to compare against.")
@click.option("--span", type=click.IntRange(min=10), default=200, show_default=True,
              help="Steps whose median makes each latency figure.")
@click.option("--window", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--budget", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--pins", type=click.IntRange(min=0), default=16, show_default=True,
              help="Prompt tokens pinned in the heedful run (re-rotated at every step).")
@click.option("--synthetic", is_flag=True,
              help="Measure a random-weights model of the default architecture (sizes below) instead of --model.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="Measure a real architecture at its real size with random weights instead of --model.")
@click.option("--layers", type=click.IntRange(min=1), default=4, show_default=True, help="--synthetic: layers.")
@click.option("--hidden", type=click.IntRange(min=64), default=256, show_default=True, help="--synthetic: hidden size.")
@click.option("--context", "max_context", type=click.IntRange(min=128), default=32_768, show_default=True,
              help="--synthetic: max_position_embeddings (the stock run stops there).")
@click.option("--skip-stock", is_flag=True, help="Only the heedful run.")
@click.option("--stock", "stock_as", type=click.Choice(STOCK_MODES), default="auto", show_default=True,
              help="The stock run's cache: auto (compiled on CUDA, dynamic elsewhere), dynamic (DynamicCache), "
                   "static (StaticCache), compiled (StaticCache + torch.compile reduce-overhead).")
@click.option("--prompt-tokens", "context", type=click.IntRange(min=0), default=0, show_default=True,
              help="Context both runs read before decoding (filler text; 0: a short prompt).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch intra-op threads (default: torch's). On a loaded CPU, 1 avoids threads spinning "
                   "for each other, which can cost more than the step itself.")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Write a plot of per-token latency against generated tokens to this file.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line of the figures.")
@model_options
def stream(n, early, span, window, budget, pins, synthetic, preset, layers, hidden, max_context, skip_stock, stock_as,
           context, threads, png, as_json, model, dtype, device, trust_remote_code):
    """Decode latency at EARLY and at N generated tokens, aten ops per step and KV bytes:
    heedful (pins + window, budget) against a stock full-cache run of the same model, the
    two decode loops interleaved step by step."""
    if early > n:
        raise click.BadParameter(f"{early} is past -n {n}", param_hint="--early")
    if synthetic and preset:
        raise click.BadParameter("give --synthetic or --preset, not both", param_hint="--preset")
    if threads:
        torch.set_num_threads(threads)
    if synthetic:
        mdl, tok, label = synthetic_model(layers, hidden, max(max_context, context + n + 64))
        if device:
            mdl.to(device)
    elif preset:
        mdl, tok, label = preset_model(preset, dtype, device)
    else:
        from heedful.models.loading import load_model

        lm = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        mdl, tok, label = lm.model, lm.tokenizer, lm.name
    click.echo(f"model: {label}; device {next(mdl.parameters()).device}; torch threads {torch.get_num_threads()}",
               err=True)
    with click.progressbar(length=n, label="decoding", file=sys.stderr) as bar:
        r = measure(mdl, tok, n, early, span, window, budget, pins, not skip_stock, bar, context, stock_as)
    r["model"] = label
    report(r)
    if png:
        plot(r, png)
        click.echo(f"plot: {png}")
    if as_json:
        keys = ("ms_early", "ms_end", "ops_per_step", "kv_bytes_end")
        summary = {name: {k: r[name][k] for k in keys} for name in ("heedful", "stock") if name in r}
        click.echo(json.dumps({**summary, "heedful_over_stock_early": r["paired_early"], "tokens": n, "early": early,
                               "device": r["device"], "model": label, "context": r["context"],
                               "stock_mode": r["stock_mode"], "cuda_graph": r["heedful"]["cuda_graph"],
                               "window": window, "budget": budget, "pins": pins}))
