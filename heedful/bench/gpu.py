"""`heedful bench gpu`: the whole GPU check (issue #25) in two parts of at most 8 minutes each,
run by scripts/gpu-check.sh on a machine with a CUDA GPU; every figure and the trained
weights land under `--out` ($OUT on the device machine).

Part 1 (about 5 minutes on one H100/H200): the GPU and the versions; the kernel table at
n = 32k and 128k, k = 2k and 16k (bandwidth, selection's share of the decode); `bench stream`
at 1k and 32k tokens of context on a real-size preset, heedful (Triton path, captured step)
against stock transformers with a static cache and torch.compile (reduce-overhead); last, in
the time left, the CUDA tests (tests/kernels, and the captured decode step of a whole
session against the unpadded one).

Part 2 (about 6.5 minutes): the `gpu` preset's gated model trained for `--minutes`, its
ungated twin for the same steps, both evaluated (bits per character on held-out prose,
full-attention recall, the first token's attention share), their weights in bf16 packed
into tar parts of at most 15 MiB (what the device machine brings back: 8 files, 64 MiB).

Every figure is written as soon as it is known (figures-partN.json, every key present: a
figure not measured says why), so a part cut off by its time limit still brings back what
it measured. `--tiny` runs the same code on CPU with tiny sizes (the test).
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import click
import torch

NO_GPU = "unmeasured: no GPU"
ROOT = Path(__file__).resolve().parents[2]  # the checkout (tests/ beside heedful/)
KERNEL_CELLS = [(32768, 2048), (32768, 16384), (131072, 2048), (131072, 16384)]
TINY_CELLS = [(512, 64), (512, 256)]
CONTEXTS = [1024, 32768]
TINY_CONTEXTS = [64, 256]
PART1 = ["gpu", "versions", "kernel_tests"] + \
    [f"kernels.n{n}.k{k}.{f}" for n, k in KERNEL_CELLS for f in ("sparse_us", "peak_pct", "select_pct")] + \
    [f"stream.ctx{c}.{f}" for c in CONTEXTS for f in ("heedful_ms", "stock_ms", "stock_over_heedful", "cuda_graph")] \
    + ["stream.model"]
PART2 = ["corpus"] + [f"train.{m}.{f}" for m in ("gated", "ungated") for f in (
    "parameters", "steps", "train_seconds", "bits_per_char", "recall_full_attention", "first_token_share")] + \
    ["weights"]
GOALS = ["goal.decode_1k_vs_stock", "goal.decode_32k_3x", "goal.bandwidth_60pct_16k", "goal.selection_under_20pct",
         "goal.bpc_1.4", "goal.recall_0.85", "goal.sink_ungated_over_gated"]
KEYS = PART1 + PART2 + GOALS
PART_SIZE = 15 * 2**20  # bytes of one returned file
RETURN_LIMIT = 60 * 2**20  # of the 64 MiB the device machine brings back, what the weights may take


class Figures:
    """The figures of one run, written to `path` after every change."""

    def __init__(self, path: Path, parts: set[int], note: str):
        self.path, self.data = path, {"note": note}
        for k in KEYS:
            part = 1 if k in PART1 else 2 if k in PART2 else 0
            self.data[k] = f"unmeasured: part {part} not run" if part and part not in parts else "unmeasured"
        self.save()

    def __setitem__(self, key, value):
        assert key in KEYS or key.startswith("detail."), key
        self.data[key] = value
        self.save()

    def __getitem__(self, key):
        return self.data[key]

    def save(self):
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        os.replace(tmp, self.path)


def _failed(e: BaseException) -> str:
    return f"failed: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def _num(x) -> float | None:
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


# ------------------------------------------------------------------ part 1
def check_gpu(fig: Figures) -> bool:
    import transformers

    versions = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                "transformers": transformers.__version__}
    try:
        import triton

        versions["triton"] = triton.__version__
    except Exception as e:  # noqa: BLE001
        versions["triton"] = _failed(e)
    fig["versions"] = versions
    if not torch.cuda.is_available():
        fig["gpu"] = NO_GPU
        return False
    p = torch.cuda.get_device_properties(0)
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    a @ a  # cuBLAS set up outside the timing
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ a
    torch.cuda.synchronize()
    fig["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "sms": p.multi_processor_count,
                  "bf16_matmul_tflops": round(10 * 2 * 4096 ** 3 / (time.perf_counter() - t0) / 1e12, 1)}
    return True


def kernel_tests(fig: Figures, tiny: bool, timeout: int) -> None:
    """The CUDA kernel tests in a child process (CPU: only collected, `-k cuda` selects none)."""
    if not (ROOT / "tests" / "kernels").is_dir():
        fig["kernel_tests"] = "unmeasured: tests/ not beside heedful/"
        return
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    # every kernel test (parametrized on CUDA too); of the sessions', the captured step on CUDA
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/kernels",
            "tests/selector/test_attention_paths.py", "-k", "not test_attention_paths or cuda"]
    import importlib.util

    if importlib.util.find_spec("xdist"):  # Triton compiles each kernel variant: 8 processes compile at once
        args += ["-n", "8"]
    if tiny:  # a CPU: pytest runs, the CUDA tests would all skip (and collecting them takes a minute here)
        args = [sys.executable, "-m", "pytest", "--version"]
    t0 = time.time()
    try:
        r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        lines = [ln for ln in (r.stdout + r.stderr).splitlines()
                 if re.search(r"\d+ (passed|failed|skipped|deselected|error)|^pytest \d", ln)]
        summary = lines[-1].strip("= ") if lines else r.stdout[-300:]
        fig["kernel_tests"] = {"rc": r.returncode, "summary": summary, "seconds": round(time.time() - t0, 1),
                               "measured": not tiny and torch.cuda.is_available()}
        if r.returncode not in (0, 5):
            fig["detail.kernel_tests_tail"] = r.stdout[-3000:]
    except subprocess.TimeoutExpired:
        fig["kernel_tests"] = f"failed: timed out after {timeout} s"


def kernel_bench(fig: Figures, tiny: bool) -> None:
    from heedful.bench.kernels import kernels

    cells = TINY_CELLS if tiny else KERNEL_CELLS
    ns = ",".join(sorted({str(n) for n, _ in cells}, key=int))
    ks = ",".join(sorted({str(k) for _, k in cells}, key=int))
    rows = kernels.callback(ns=ns, ks=ks, dtype="bfloat16", rep=20 if tiny else 60, warmup=5 if tiny else 10,
                            block_size=64, peak_gbs=None, pattern="random", eager=False, sweep=False,
                            cpu_smoke=tiny, skip_flex=True)
    got = {(r["n"], r["k"]): r for r in rows}
    for (n, k), (tn, tk) in zip(KERNEL_CELLS, cells if tiny else KERNEL_CELLS):
        r = got.get((tn, tk))
        for f in ("sparse_us", "peak_pct", "select_pct"):
            v = r.get(f) if r else None
            fig[f"kernels.n{n}.k{k}.{f}"] = (round(v, 2) if v is not None else "unmeasured") if not tiny else \
                {"cpu_smoke": f"n={tn} k={tk}", "value": v}
    fig["detail.kernel_rows"] = rows


def stream_bench(fig: Figures, tiny: bool, preset: str, steps: int) -> None:
    from heedful.bench.presets import preset_model, synthetic_model

    contexts = TINY_CONTEXTS if tiny else CONTEXTS
    if tiny:
        model, tok, label = synthetic_model(2, 64, max(contexts) + steps + 64)
    else:
        model, tok, label = preset_model(preset, "auto", "cuda")
    fig["stream.model"] = label
    before = os.environ.get("HEEDFUL_CUDA_GRAPH")
    if tiny and not torch.cuda.is_available():  # the padded step (what CUDA captures), eagerly
        os.environ["HEEDFUL_CUDA_GRAPH"] = "static"
    try:
        _stream_contexts(fig, model, tok, tiny, steps, contexts)
    finally:
        if before is None:
            os.environ.pop("HEEDFUL_CUDA_GRAPH", None)
        else:
            os.environ["HEEDFUL_CUDA_GRAPH"] = before
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _stream_contexts(fig: Figures, model, tok, tiny: bool, steps: int, contexts: list[int]) -> None:
    from heedful.bench.stream import measure

    for key, ctx in zip(CONTEXTS, contexts):
        r = None
        for stock in ("static",) if tiny else ("compiled", "static"):  # compile failed: the static cache alone
            try:
                r = measure(model, tok, steps, steps, max(10, steps // 2), 32 if tiny else 256, 64 if tiny else 512,
                            16, True, context=ctx, stock_as=stock, ops=False)
                break
            except Exception as e:  # noqa: BLE001 - said in the figures; the other context may still run
                fig[f"detail.stream.ctx{key}.error_{stock}"] = _failed(e)
                if stock == "compiled":
                    torch._dynamo.reset()
        if r is None:
            fig[f"stream.ctx{key}.heedful_ms"] = fig[f"detail.stream.ctx{key}.error_static"]
            continue
        h, s = r["heedful"]["ms_early"], r["stock"]["ms_early"]
        fig[f"stream.ctx{key}.heedful_ms"] = h
        fig[f"stream.ctx{key}.stock_ms"] = s
        fig[f"stream.ctx{key}.stock_over_heedful"] = s / h if h and s else None
        fig[f"stream.ctx{key}.cuda_graph"] = r["heedful"]["cuda_graph"]
        fig[f"detail.stream.ctx{key}"] = {k: r[k] for k in ("context", "stock_mode", "tokens", "window", "budget",
                                                             "pins", "paired_early")}


# ------------------------------------------------------------------ part 2
def tiny_corpus(root: Path) -> Path:
    """Generated stories and recall episodes (no natural text: valid_prose.txt is the held-out
    stories), enough for the tiny run."""
    from heedful.train.corpus import build_corpus

    out = root / "corpus-tiny"
    if not (out / "manifest.json").is_file():
        build_corpus(out, site_packages=False, doc_root=None, licences_root=None, n_stories=300, n_recall=200,
                     valid_fraction=0.3, log=lambda *_: None)
        (out / "valid_prose.txt").write_text((out / "valid.txt").read_text())
    return out


def find_corpus(corpus: str, work: Path) -> Path:
    """A corpus folder, or a .tar.xz of one (docs/model.md's carried archive), unpacked in work;
    "build": one built here from this Python's packages (permissive licences) and generated
    text, when no archive could be carried (its time unmeasured; not the recipe's corpus)."""
    if corpus == "build":
        from heedful.train.corpus import build_corpus

        out = work / "corpus-built"
        if not (out / "manifest.json").is_file():
            build_corpus(out, doc_root=None, workers=os.cpu_count() or 1, n_stories=20000, n_recall=50000,
                         max_natural_chars=20_000_000, log=lambda m: click.echo(m, err=True))
        return out
    p = Path(corpus)
    if p.is_dir() and (p / "manifest.json").is_file():
        return p
    if p.is_file() and p.name.endswith(".tar.xz"):
        with tarfile.open(p) as t:
            t.extractall(work, filter="data")
        found = [d.parent for d in work.glob("*/manifest.json")]
        if found:
            return found[0]
    raise click.ClickException(f"--corpus {corpus}: neither a corpus folder nor its .tar.xz (docs/model.md, "
                               "'On the CPU machine, before the device session')")


def train_both(fig: Figures, corpus: Path, work: Path, tiny: bool, minutes: float) -> list[Path]:
    from heedful.train.loop import TrainConfig, train
    from heedful.train.models import PRESETS

    fig["corpus"] = {"dir": str(corpus), "manifest_chars": json.loads((corpus / "manifest.json").read_text())
                     .get("chars")}
    tok_dir = corpus / "tokenizer" if (corpus / "tokenizer" / "tokenizer.json").is_file() else None
    common = dict(corpus_dir=str(corpus), size=PRESETS["tiny" if tiny else "gpu"], vocab_size=400 if tiny else 8192,
                  seq_len=32 if tiny else 2048, batch_size=8 if tiny else 32, lr=2e-3, warmup=20 if tiny else 200,
                  recall_fraction=0.25, copy_fraction=0.3, dtype="bfloat16", eval_every=10**9, ckpt_every=10**9,
                  eval_rows=2 if tiny else 16, eval_episodes=2 if tiny else 32, bpc_chars=2000 if tiny else 100_000,
                  threads=1 if tiny else None, seed=0)
    dirs = []
    steps = None
    for name, gated in (("gated", True), ("ungated", False)):
        out = work / name
        cfg = TrainConfig(out_dir=str(out), gated=gated, tokenizer_dir=str(tok_dir) if tok_dir else None,
                          steps=steps or 10**6, max_minutes=None if steps else minutes, **common)
        info = train(cfg, log=lambda m: click.echo(m, err=True), progress=False)
        steps = steps or info["steps"]  # the twin: the gated run's steps, so both see the same batches
        tok_dir = tok_dir or out  # the twin shares the gated model's tokenizer
        fig[f"train.{name}.parameters"] = info["parameters"]
        fig[f"train.{name}.steps"] = info["steps"]
        fig[f"train.{name}.train_seconds"] = info["train_seconds"]
        dirs.append(out)
    return dirs


def evaluate_both(fig: Figures, dirs: list[Path], corpus: Path, tiny: bool) -> None:
    from heedful.train.evaluate import evaluate

    device = "cuda" if torch.cuda.is_available() else "cpu"
    for d in dirs:
        r = evaluate(str(d), str(corpus), rows=2 if tiny else 16, seq_len=32 if tiny else 2048, episodes=3 if tiny
                     else 100, samples=False, bpc_chars=2000 if tiny else 300_000, device=device)
        for f in ("bits_per_char", "recall_full_attention", "first_token_share"):
            fig[f"train.{d.name}.{f}"] = r[f]
        fig[f"detail.eval.{d.name}"] = {k: v for k, v in r.items() if k != "samples"}


def pack_weights(fig: Figures, dirs: list[Path], out: Path) -> None:
    """Each model in bf16 (safetensors, config, tokenizer, training.json) as a tar cut into
    parts of 15 MiB, the gated model first; a model whose weights would pass the 60 MiB the
    machine brings back comes without them (said in the figures)."""
    from safetensors.torch import load_file, save_file

    used, packed = 0, {}
    for d in dirs:
        sd = load_file(str(d / "model.safetensors"))
        bf = d / "bf16"
        bf.mkdir(exist_ok=True)
        save_file({k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}, str(bf / "model.safetensors"),
                  metadata={"format": "pt"})
        files = [f for f in d.iterdir() if f.is_file() and f.name != "model.safetensors"]
        size = (bf / "model.safetensors").stat().st_size + sum(f.stat().st_size for f in files)
        with_weights = used + size <= RETURN_LIMIT
        tar = out / f"{d.name}.tar"
        with tarfile.open(tar, "w") as t:
            for f in files:
                t.add(f, arcname=f"{d.name}/{f.name}")
            if with_weights:
                t.add(bf / "model.safetensors", arcname=f"{d.name}/model.safetensors")
        used += tar.stat().st_size
        parts = split(tar)
        packed[d.name] = {"parts": [p.name for p in parts], "weights": "bf16" if with_weights else
                          "left out: over the 64 MiB the device machine brings back"}
    fig["weights"] = packed


def split(path: Path) -> list[Path]:
    """path cut into path.00, path.01, ... of PART_SIZE bytes (cat them back together)."""
    parts = []
    with open(path, "rb") as f:
        while chunk := f.read(PART_SIZE):
            p = path.with_name(f"{path.name}.{len(parts):02d}")
            p.write_bytes(chunk)
            parts.append(p)
    path.unlink()
    return parts


# ------------------------------------------------------------------ goals
def judge(fig: Figures) -> None:
    def g(key, ok):
        fig[key] = "unmeasured" if ok is None else ("met" if ok else "not met")

    def ratio(key):
        return _num(fig[key])

    if not isinstance(fig["gpu"], dict):
        for k in GOALS:
            fig[k] = NO_GPU
        return
    r1, r32 = ratio("stream.ctx1024.stock_over_heedful"), ratio("stream.ctx32768.stock_over_heedful")
    g("goal.decode_1k_vs_stock", None if r1 is None else r1 >= 1.0)
    g("goal.decode_32k_3x", None if r32 is None else r32 >= 3.0)
    bw = [ratio(f"kernels.n{n}.k{k}.peak_pct") for n, k in KERNEL_CELLS if k == 16384]
    g("goal.bandwidth_60pct_16k", None if None in bw else min(bw) >= 60)
    sel = [ratio(f"kernels.n{n}.k{k}.select_pct") for n, k in KERNEL_CELLS]
    g("goal.selection_under_20pct", None if None in sel else max(sel) < 20)
    bpc, rec = ratio("train.gated.bits_per_char"), ratio("train.gated.recall_full_attention")
    g("goal.bpc_1.4", None if bpc is None else bpc <= 1.4)
    g("goal.recall_0.85", None if rec is None else rec >= 0.85)
    a, b = ratio("train.ungated.first_token_share"), ratio("train.gated.first_token_share")
    g("goal.sink_ungated_over_gated", None if a is None or b is None else a >= 2 * b)


def merge(paths: list[str]) -> dict:
    """Figures of several parts: a measured value wins over an "unmeasured" one."""
    out: dict = {}
    for p in paths:
        for k, v in json.loads(Path(p).read_text()).items():
            if k not in out or (isinstance(out[k], str) and out[k].startswith("unmeasured")):
                out[k] = v
    return out


@click.command()
@click.option("--part", type=click.Choice(["1", "2", "all"]), default=None,
              help="1: checks, CUDA kernel tests, kernel table, bench stream at 1k and 32k; 2: training and "
                   "evaluation of the gated model and its twin, weights; all: both (the tiny test).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where figures and weights go [default: $OUT, else runs/gpu-check].")
@click.option("--tiny", is_flag=True, help="Tiny sizes on CPU: checks the whole thing in a minute (figures meaningless).")
@click.option("--corpus", default="runs/carry/corpus-gpu.tar.xz", show_default=True,
              help="Part 2: the corpus folder, or its .tar.xz (docs/model.md builds and carries it), or build "
                   "(from this Python's packages, on the spot: when nothing could be carried).")
@click.option("--minutes", type=float, default=2.0, show_default=True,
              help="Part 2: minutes of training steps for the gated model (the twin takes its step count).")
@click.option("--preset", default="qwen3-0.6b", show_default=True, help="Part 1: the model bench stream decodes with.")
@click.option("--steps", type=click.IntRange(min=10), default=200, show_default=True,
              help="Part 1: decode steps at each context (the median of the last half is the figure).")
@click.option("--tests-timeout", type=int, default=240, show_default=True,
              help="Part 1: the kernel tests' limit, s (they run last, in what is left of 450 s).")
@click.option("--merge", "merge_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Print the figures of several parts' files merged, and nothing else.")
def gpu(part, out_dir, tiny, corpus, minutes, preset, steps, tests_timeout, merge_files):
    """The GPU check of issue #25: part 1 (kernels, decode speed) and part 2 (training), each
    under 8 minutes; figures-partN.json and the weights' tar parts under --out."""
    if merge_files:
        click.echo(json.dumps(merge(list(merge_files)), indent=1, default=str))
        return
    if part is None:
        raise click.UsageError("--part 1, 2 or all (or --merge FILES)")
    out = Path(out_dir or os.environ.get("OUT") or "runs/gpu-check")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("HEEDFUL_GPU_WORK", out.parent / (out.name + "-work")))
    work.mkdir(parents=True, exist_ok=True)
    parts = {1, 2} if part == "all" else {int(part)}
    has_gpu = torch.cuda.is_available()
    note = ("tiny sizes on " + ("CUDA" if has_gpu else "CPU") + ": the figures check the code, they measure nothing"
            if tiny else "measured" if has_gpu else NO_GPU)
    fig = Figures(out / f"figures-part{part}.json", parts, note)
    t0 = time.time()
    gpu_ok = check_gpu(fig)
    if not gpu_ok and not tiny:
        judge(fig)
        click.echo(f"no CUDA GPU: every figure {NO_GPU!r} ({fig.path})")
        return
    if 1 in parts:  # the figures first (the quick ones first), then the tests in the time left (the call: 470 s)
        for step, fn in (("kernels", lambda: kernel_bench(fig, tiny)),
                         ("stream", lambda: stream_bench(fig, tiny, preset, 30 if tiny else steps)),
                         ("tests", lambda: kernel_tests(fig, tiny, max(60, min(tests_timeout,
                                                                               int(450 - (time.time() - t0))))))):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - record it, go on with the next
                fig[f"detail.{step}_error"] = _failed(e)
            fig[f"detail.{step}_done_at_s"] = round(time.time() - t0, 1)
            click.echo(f"[{time.time() - t0:.0f}s] {step} done", err=True)
    failed = None
    if 2 in parts:
        try:
            corpus_dir = tiny_corpus(work) if tiny else find_corpus(corpus, work)
            dirs = train_both(fig, corpus_dir, work, tiny, 0.03 if tiny else minutes)
            click.echo(f"[{time.time() - t0:.0f}s] trained", err=True)
            evaluate_both(fig, dirs, corpus_dir, tiny)
            click.echo(f"[{time.time() - t0:.0f}s] evaluated", err=True)
            pack_weights(fig, dirs, out)
        except Exception as e:  # noqa: BLE001 - the figures say so, and the command fails
            failed = fig["detail.part2_error"] = _failed(e)
    judge(fig)
    fig["detail.seconds"] = round(time.time() - t0, 1)
    click.echo(json.dumps({k: fig.data[k] for k in KEYS}, indent=1, default=str))
    click.echo(f"figures: {fig.path}", err=True)
    if failed:
        raise click.ClickException(f"part 2 {failed}")
