"""The settings a person gives to open a model and a session, as click options. The option
names are the keyword arguments of heedful.app.open.open_session, so commands (the CLI's and
the benchmarks') pass them straight through."""

from __future__ import annotations

import functools
import math

import click
from click.core import ParameterSource

from heedful.limits import MAX_INT
from heedful.selector.config import POOLS, SCORES

SESSION_SETTINGS = ("window", "budget", "sinks", "auto_topk", "auto_pool", "auto_score", "fold_budget", "fold_block",
                    "fold_compressor", "seed", "temperature", "top_p", "top_k", "min_p", "repetition_penalty")


class FiniteFloat(click.FloatRange):
    """A float in a range, refusing nan and inf (which FloatRange lets through)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


def given_settings(ctx: click.Context, settings: dict) -> dict:
    """The session settings the person actually gave (command line or environment), so that
    defaults never override what a stored session recorded."""
    return {k: v for k, v in settings.items()
            if k in SESSION_SETTINGS and ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE,
                                                                       ParameterSource.ENVIRONMENT)}


def _attention_choice(ctx, param, value):
    """--attention is read where the engine picks its path (selector/attention.py path_for),
    through HEEDFUL_ATTENTION, so every way a session opens (new, resumed, replayed) obeys it."""
    import os

    if value:
        os.environ["HEEDFUL_ATTENTION"] = value
    return value


def _cuda_graph_choice(ctx, param, value):
    """--cuda-graph is read where the engine opens its cache (selector/static.py mode_for),
    through HEEDFUL_CUDA_GRAPH, like --attention."""
    import os

    if value:
        os.environ["HEEDFUL_CUDA_GRAPH"] = value
    return value


def _gguf_file_choice(ctx, param, value):
    """--gguf-file is read where the model's source is resolved (heedful.models.loading
    resolve_source), through HEEDFUL_GGUF_FILE, like --attention."""
    import os

    if value:
        os.environ["HEEDFUL_GGUF_FILE"] = value
    return value


def model_options(f):
    @click.option("-m", "--model", "model", default=None, metavar="NAME|DIR|HF_ID|FILE.gguf",
                  help="A named model (heedful models: smollm2), a local model folder, a Hugging Face id or a "
                       "GGUF file (converted once to safetensors in the user cache) [default: $HEEDFUL_MODEL, else "
                       "the embedded gated model].")
    @click.option("--gguf-file", default=None, metavar="NAME", expose_value=False, envvar="HEEDFUL_GGUF_FILE",
                  callback=_gguf_file_choice,
                  help="With --model DIR or a Hugging Face id: the GGUF file in that folder or hub repository "
                       "(downloaded through the hub's cache, HF_HOME respected), converted once like FILE.gguf.")
    @click.option("--dtype", default="auto", show_default=True,
                  type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
                  help="Weights dtype; auto: bfloat16 on a CUDA GPU that has it (else float16), float32 on CPU "
                       "(CPUs run bf16 matrix-vector work slower than fp32).")
    @click.option("--device", default=None, help="torch device (default: cuda if available, else cpu).")
    @click.option("--trust-remote-code", is_flag=True, help="Allow the model folder's own Python code.")
    @click.option("--attention", type=click.Choice(["auto", "sdpa", "triton"]), default=None, expose_value=False,
                  envvar="HEEDFUL_ATTENTION", callback=_attention_choice,
                  help="The attention path: triton (heedful's Triton kernels; on CPU only under "
                       "TRITON_INTERPRET=1), sdpa (PyTorch's dense SDPA over the resident rows), or auto: Triton "
                       "on CUDA, SDPA elsewhere [default: $HEEDFUL_ATTENTION, else auto]. Same tokens either way.")
    @click.option("--cuda-graph", type=click.Choice(["auto", "off", "static"]), default=None, expose_value=False,
                  envvar="HEEDFUL_CUDA_GRAPH", callback=_cuda_graph_choice,
                  help="The decode step padded to the budget and captured as a CUDA graph: auto (on CUDA), off, "
                       "or static (padded but not captured: the captured code run eagerly) "
                       "[default: $HEEDFUL_CUDA_GRAPH, else auto]. Same tokens either way.")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


def session_options(f):
    @click.option("--window", type=click.IntRange(min=1), default=None,
                  help="Recent tokens always attended, W [default: min(256, (budget - sinks) / 2), room for pins].")
    @click.option("--budget", type=click.IntRange(min=1), default=None,
                  help="Most KV rows resident per layer, B >= W + sinks + pins "
                       "[default: min(1024, the model's context length)].")
    @click.option("--sinks", type=click.IntRange(min=0), default=None,
                  help="First tokens always kept (default: 0 for gated models, 4 otherwise).")
    @click.option("--auto-topk", type=click.IntRange(min=0), default=0, show_default=True,
                  help="NSA-style blocks picked per step from the rest of the budget (0 = off).")
    @click.option("--auto-pool", type=click.Choice(POOLS), default=POOLS[0], show_default=True,
                  help="With --auto-topk: what the rest of the budget holds: the rows the selection keeps picking "
                       "(credit) or the most recent ones (fifo).")
    @click.option("--auto-score", type=click.Choice(SCORES), default=SCORES[0], show_default=True,
                  help="With --auto-topk: how blocks are scored: Quest's min/max bound summed over the GQA group "
                       "(minmax), q . mean key (mean), or flash-linear-attention's NSA rule (fla: group-averaged "
                       "softmax over mean-pooled keys, the first block always kept).")
    @click.option("--fold-budget", type=click.IntRange(min=0), default=0, show_default=True,
                  help="Rows of the budget for automatic fold: what leaves the window is pooled into "
                       "summary rows, the oldest leaving first (0 = off).")
    @click.option("--fold-block", type=click.IntRange(min=1), default=16, show_default=True,
                  help="Tokens pooled into one fold summary row.")
    @click.option("--fold-compressor", default=None, metavar="auto|mean|DIR",
                  help="With --fold-budget: how a block becomes its summary row: the mean of its keys and values "
                       "(mean), a learned compressor's folder (heedful train compressor), or auto: the model "
                       "folder's own fold_compressor/ when it pools blocks of --fold-block tokens, else mean "
                       "[default: auto].")
    @click.option("--seed", type=click.IntRange(0, MAX_INT), default=0, show_default=True, help="Sampling seed.")
    @click.option("--temperature", type=FiniteFloat(min=0), default=None,
                  help="0 = greedy [default: the model's generation_config: greedy unless it samples].")
    @click.option("--top-p", type=FiniteFloat(min=0, max=1, min_open=True), default=None,
                  help="Nucleus sampling, 1 = off [default: the model's generation_config].")
    @click.option("--top-k", type=click.IntRange(0, MAX_INT), default=None,
                  help="Sample among the k likeliest tokens, 0 = off [default: the model's generation_config].")
    @click.option("--min-p", type=FiniteFloat(min=0, max=1, max_open=True), default=None,
                  help="Drop tokens below min-p times the likeliest one's probability, 0 = off "
                       "[default: the model's generation_config].")
    @click.option("--repetition-penalty", type=FiniteFloat(min=0, max=100, min_open=True), default=None,
                  help="transformers' repetition penalty over the stream's tokens (greedy too), 1 = off "
                       "[default: the model's generation_config].")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


SCALE_SETTINGS = ("tp", "device_map", "max_memory", "offload_folder")


def scale_options(f):
    """Running past one device (heedful.models.parallel, heedful.app.distributed): the option
    names are load_model's keyword arguments."""
    @click.option("--tp", type=click.Choice(["auto"]), default=None,
                  help="Tensor parallelism under torchrun (torchrun --nproc-per-node N -m heedful ... --tp auto): "
                       "each rank holds its share of every layer's heads and their KV rows; rank 0 prints and records.")
    @click.option("--device-map", type=click.Choice(["auto", "balanced", "sequential"]), default=None,
                  help="Place layers with accelerate on one GPU and CPU memory (a model bigger than the GPU).")
    @click.option("--max-memory", default=None, metavar="DEV=SIZE,...",
                  help="With --device-map: memory per device, e.g. 0=20GiB,cpu=60GiB (disk=... needs --offload-folder).")
    @click.option("--offload-folder", default=None, type=click.Path(file_okay=False),
                  help="With --device-map: a folder for the layers that fit neither GPU nor CPU memory.")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


def scale_settings(settings: dict) -> dict:
    """Pops the scale options out of a command's keyword arguments: those given, for load_model."""
    return {k: v for k in SCALE_SETTINGS if (v := settings.pop(k, None)) is not None}


def check_picker(picker, auto_pin: bool, scale: dict) -> None:
    """--picker / --auto-pin usage errors, the same for generate and replay."""
    if auto_pin and not picker:
        raise click.UsageError("--auto-pin needs --picker DIR")
    if picker and "tp" in scale:
        raise click.UsageError("--picker: not with --tp (a parallel run has no picker yet)")
