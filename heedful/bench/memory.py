"""`heedful bench memory`: the peak memory of one long run, heedful against stock
transformers generation (full cache), each measured alone in a fresh process (its peak RSS,
and the peak less what the loaded model already held).

The model has a real model's attention shape (`--shape`: its layers, query and key/value
heads, head size, rotary base; the KV cache's size per token is the real one) with a small
hidden size and vocabulary and random weights, so the run fits a CPU in a minute or two:
the figures are about memory, never about text.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import click
import torch

# published attention shapes: layers, query heads, key/value heads, head size, rotary base, context
SHAPES = {
    "qwen3-0.6b": dict(num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                       rope_theta=1_000_000.0, max_position_embeddings=40960),
    "llama-3.2-1b": dict(num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                         rope_theta=500_000.0, max_position_embeddings=131072),
}
VOCAB = 4096


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _model(shape: str, hidden: int, attn: str):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    from heedful.selector.attention import register

    register()
    s = dict(SHAPES[shape])
    cfg = Qwen3Config(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=3 * hidden,
                      rope_parameters={"rope_type": "default", "rope_theta": s.pop("rope_theta")},
                      tie_word_embeddings=True, **s)
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg).eval()
    words = {f"w{i}": i for i in range(VOCAB)}
    tk = Tokenizer(models.WordLevel(vocab=words, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return model, PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="w0")


def _child(which: str, shape: str, hidden: int, tokens: int, prompt: int, window: int, budget: int) -> dict:
    torch.set_num_threads(1)
    model, tok = _model(shape, hidden, "heedful" if which == "heedful" else "sdpa")
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (prompt,), generator=g).tolist()
    loaded = _rss_mb()
    t0 = time.perf_counter()
    if which == "heedful":
        from heedful.selector.session import Session

        s = Session(model, tok, window=window, budget=budget, sinks=4, gated=False)
        s.prompt(" ".join(f"w{i}" for i in ids))
        for _ in s.generate(tokens - prompt, stop_at_eos=False):
            pass
        st = s.stats()
        kv, n = st.allocated_bytes, st.tokens
    else:
        with torch.inference_mode():
            out = model.generate(torch.tensor([ids]), max_new_tokens=tokens - prompt, min_new_tokens=tokens - prompt,
                                 do_sample=False, return_dict_in_generate=True)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        kv = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
        n = out.sequences.shape[1]
    seconds = time.perf_counter() - t0
    return {"which": which, "tokens": n, "loaded_mb": loaded, "peak_mb": _peak_mb(), "kv_mb": kv / 2**20,
            "tokens_per_s": (tokens - prompt) / seconds}


@click.command()
@click.option("--shape", type=click.Choice(sorted(SHAPES)), default="qwen3-0.6b", show_default=True,
              help="Whose attention shape (layers, heads, head size, rotary base).")
@click.option("--hidden", type=click.IntRange(min=64), default=256, show_default=True, help="Hidden size.")
@click.option("--tokens", type=click.IntRange(min=2), default=2000, show_default=True,
              help="Tokens in the run, prompt included.")
@click.option("--prompt", "prompt_len", type=click.IntRange(min=1), default=100, show_default=True,
              help="Prompt tokens (random ids).")
@click.option("--window", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--budget", type=click.IntRange(min=2), default=256, show_default=True)
@click.option("--only", type=click.Choice(["heedful", "stock"]), default=None, hidden=True)
def memory(shape, hidden, tokens, prompt_len, window, budget, only):
    """Peak memory of one run of TOKENS tokens: heedful (window + budget) against stock
    generation with a full cache, each in a fresh process, one thread."""
    if prompt_len >= tokens:
        raise click.BadParameter(f"{prompt_len} must be less than --tokens {tokens}", param_hint="--prompt")
    if only:
        click.echo(json.dumps(_child(only, shape, hidden, tokens, prompt_len, window, budget)))
        return
    rows = []
    for which in ("heedful", "stock"):
        args = [sys.executable, "-m", "heedful", "bench", "memory", "--only", which, "--shape", shape, "--hidden",
                str(hidden), "--tokens", str(tokens), "--prompt", str(prompt_len), "--window", str(window),
                "--budget", str(budget)]
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode:
            raise click.ClickException(f"the {which} run failed: {r.stderr.strip().splitlines()[-1:]}")
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    click.echo(f"{shape} attention shape, hidden {hidden}, {tokens} tokens ({prompt_len} prompt), fp32, CPU, "
               f"1 thread; heedful window {window}, budget {budget}")
    click.echo(f"{'':<9}{'peak RSS':>10}{'after load':>12}{'run adds':>10}{'KV cache':>10}{'tok/s':>8}")
    for r in rows:
        click.echo(f"{r['which']:<9}{r['peak_mb']:>8.0f}MB{r['loaded_mb']:>10.0f}MB"
                   f"{r['peak_mb'] - r['loaded_mb']:>8.0f}MB{r['kv_mb']:>8.0f}MB{r['tokens_per_s']:>8.1f}")
