"""`heedful bench stream`: per-token decode latency and resident KV memory, heedful
(window + budget) against stock transformers generation with a full cache, same model,
same run. The claim checked: heedful's cost per token is flat and its memory constant,
while the full cache grows until it hits the model's context limit."""

from __future__ import annotations

import statistics
import sys
import time

import click
import torch

from heedful.app.options import model_options


def _synthetic_model(layers: int, hidden: int, context: int):
    """Random weights in the default model's architecture: latency does not depend on
    what the weights say. Reported as synthetic; never used to generate text for a person."""
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen3_5 import Qwen3_5ForCausalLM, Qwen3_5TextConfig
    from tokenizers import Tokenizer, models, pre_tokenizers

    from heedful.selector.attention import register

    register()
    vocab = {chr(c): i for i, c in enumerate(range(32, 127))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="?")
    heads = max(2, hidden // 64)
    cfg = Qwen3_5TextConfig(vocab_size=4096, hidden_size=hidden, intermediate_size=hidden * 3,
                            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 4),
                            head_dim=64, layer_types=["full_attention"] * layers, max_position_embeddings=context)
    torch.manual_seed(0)
    model = Qwen3_5ForCausalLM(cfg).eval()
    return model, tok, f"synthetic qwen3_5 ({layers} layers, hidden {hidden}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params)"


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


OPS_STEPS = 10  # decode steps counted after the timed ones


@torch.inference_mode()
def _run_stock(model, ids: list[int], n: int, marks: list[int], bar) -> dict:
    from transformers import DynamicCache

    impl = model.config._attn_implementation
    model.config._attn_implementation = "sdpa"
    try:
        limit = model.config.max_position_embeddings
        cache = DynamicCache(config=model.config)
        out = model(input_ids=torch.tensor([ids], device=model.device), past_key_values=cache, use_cache=True,
                    logits_to_keep=1)
        lat, mem, nxt = [], {}, int(out.logits[0, -1].argmax())
        for step in range(1, n + 1):
            if len(ids) + step >= limit:
                break
            t0 = time.perf_counter()
            out = model(input_ids=torch.tensor([[nxt]], device=model.device), past_key_values=cache, use_cache=True)
            nxt = int(out.logits[0, -1].argmax())
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            lat.append(time.perf_counter() - t0)
            if step in marks:
                mem[step] = _kv_bytes(cache)
            bar.update(1)
        mem["end"] = _kv_bytes(cache)
        ops = None
        if len(ids) + n + OPS_STEPS < limit:
            with _op_counter() as count:
                for _ in range(OPS_STEPS):
                    out = model(input_ids=torch.tensor([[nxt]], device=model.device), past_key_values=cache,
                                use_cache=True)
                    nxt = int(out.logits[0, -1].argmax())
            ops = count.n / OPS_STEPS
        return {"lat": lat, "mem": mem, "stopped": len(lat) < n, "limit": limit, "ops": ops}
    finally:
        model.config._attn_implementation = impl


def _run_heedful(model, tok, prompt: str, n: int, window: int, budget: int, marks: list[int], bar) -> dict:
    from heedful.selector.session import Session

    s = Session(model, tok, window=window, budget=budget, gated=True)
    s.prompt(prompt)
    lat, mem = [], {}
    it = s.generate(n)
    while True:
        t0 = time.perf_counter()
        try:
            next(it)
        except StopIteration:
            break
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        lat.append(time.perf_counter() - t0)
        if len(lat) in marks:
            mem[len(lat)] = s.cache.allocated_bytes()
        bar.update(1)
    mem["end"] = s.cache.allocated_bytes()
    with _op_counter() as count:
        list(s.generate(OPS_STEPS))
    return {"lat": lat, "mem": mem, "peak": s.stats().peak_resident, "ops": count.n / OPS_STEPS,
            "stream_bytes": s.stream_bytes() / len(s)}


@click.command()
@click.option("-n", "--tokens", "n", type=click.IntRange(min=100), default=20_000, show_default=True,
              help="Tokens to generate in each run.")
@click.option("--early", type=click.IntRange(min=50), default=1_000, show_default=True,
              help="The early mark (generated tokens) to compare against.")
@click.option("--span", type=click.IntRange(min=10), default=200, show_default=True,
              help="Steps whose median makes each latency figure.")
@click.option("--window", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--budget", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--synthetic", is_flag=True,
              help="Measure a random-weights model of the default architecture (sizes below) instead of --model.")
@click.option("--layers", type=int, default=4, show_default=True, help="--synthetic: layers.")
@click.option("--hidden", type=int, default=256, show_default=True, help="--synthetic: hidden size.")
@click.option("--context", type=int, default=32_768, show_default=True,
              help="--synthetic: max_position_embeddings (the stock run stops there).")
@click.option("--skip-stock", is_flag=True, help="Only the heedful run.")
@model_options
def stream(n, early, span, window, budget, synthetic, layers, hidden, context, skip_stock, model, dtype, device,
           trust_remote_code):
    """Decode latency at EARLY and at N generated tokens, and resident KV bytes:
    heedful (window + budget) against a stock full-cache run of the same model."""
    if synthetic:
        mdl, tok, label = _synthetic_model(layers, hidden, context)
        if device:
            mdl.to(device)
    else:
        from heedful.models.loading import load_model

        lm = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        mdl, tok, label = lm.model, lm.tokenizer, lm.name
    torch.manual_seed(0)
    prompt = "The vault code is 4821. Remember it. " * 4
    marks = [early, n]
    click.echo(f"model: {label}; device {next(mdl.parameters()).device}; torch threads {torch.get_num_threads()}",
               err=True)
    with click.progressbar(length=n, label="heedful", file=sys.stderr) as bar:
        h = _run_heedful(mdl, tok, prompt, n, window, budget, marks, bar)
    s = None
    if not skip_stock:
        ids = tok(prompt)["input_ids"]
        with click.progressbar(length=n, label="stock  ", file=sys.stderr) as bar:
            s = _run_stock(mdl, ids, n, marks, bar)

    def fmt(x):
        return "-" if x is None else f"{x:.2f}"

    h1, h2 = _median_before(h["lat"], early, span), _median_before(h["lat"], n, span)
    click.echo(f"\nper-token decode latency (median of {span} steps, ms) and KV bytes; window {window}, budget {budget}")
    click.echo(f"{'run':<10}{'@' + str(early):>12}{'@' + str(n):>12}{'ratio':>8}{'KV@' + str(early):>14}{'KV@end':>14}")
    click.echo(f"{'heedful':<10}{fmt(h1):>12}{fmt(h2):>12}{fmt(h2 / h1 if h1 and h2 else None):>8}"
               f"{h['mem'].get(early, 0):>14,}{h['mem']['end']:>14,}")
    if s is not None:
        last = len(s["lat"])
        s1 = _median_before(s["lat"], early, span)
        s2 = _median_before(s["lat"], last, span) if last >= span else None
        label2 = f"@{last}" + (" (context limit)" if s["stopped"] else "")
        click.echo(f"{'stock':<10}{fmt(s1):>12}{fmt(s2):>12}{fmt(s2 / s1 if s1 and s2 else None):>8}"
                   f"{s['mem'].get(early, 0):>14,}{s['mem']['end']:>14,}   last figure {label2}")
        if h2 and s2:
            click.echo(f"heedful at {n} vs stock at {last}: {s2 / h2:.2f}x faster per token")
    click.echo(f"heedful peak resident rows: {h['peak']} (budget {budget})")
    click.echo(f"heedful stream bookkeeping in RAM: {h['stream_bytes']:.0f} bytes per token "
               "(ids, texts, offsets: grows with the stream; the KV above does not)")
    stock_ops = f", stock {s['ops']:.0f}" if s is not None and s.get("ops") else ""
    click.echo(f"aten ops per decode step: heedful {h['ops']:.0f}{stock_ops} "
               "(each a kernel launch or a view; what a batch-1 step costs on a GPU)")
