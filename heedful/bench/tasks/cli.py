"""`heedful bench tasks`: published long-context tasks on a real model, heedful's policies and
the person's pins beside kvpress's presses, at the same KV rows (docs/tasks.md)."""

from __future__ import annotations

import json
import platform
import sys
import time

import click

from heedful.app.options import model_options
from heedful.errors import HeedfulError

DEFAULT_CONTEXTS = "1024,2048,4096"
DEFAULT_BUDGETS = "1/16,1/8,1/4"
QUICK = {"tasks": "niah_single-noise", "contexts": "1024", "budgets": "1/8", "seeds": 1,
         "policies": "full,window,sinks+window,pins"}


class TasksError(HeedfulError):
    """Bad input to bench tasks."""


def _names(text: str, known: list[str], what: str) -> list[str]:
    chosen = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in chosen if x not in known]
    if bad or not chosen:
        raise TasksError(f"--{what}: unknown {what[:-1]} {', '.join(bad) or '(none)'}; choose from {', '.join(known)}")
    return list(dict.fromkeys(chosen))


def _fractions(text: str) -> list[tuple[int, int]]:
    out = []
    for part in (x.strip() for x in text.split(",") if x.strip()):
        a, _, b = part.partition("/")
        try:
            f = (int(a), int(b or 1))
        except ValueError:
            raise TasksError(f"--budgets {part}: expected fractions of the context such as 1/8") from None
        if f[0] <= 0 or f[1] <= 0 or f[0] >= f[1]:
            raise TasksError(f"--budgets {part}: a budget is a fraction of the context between 0 and 1")
        out.append(f)
    if not out:
        raise TasksError("--budgets: no budget given")
    return sorted(set(out), key=lambda f: f[0] / f[1])


def _contexts(text: str) -> list[int]:
    try:
        out = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise TasksError(f"--contexts {text}: expected token counts such as 1024,2048") from None
    if not out or out[0] < 256:
        raise TasksError(f"--contexts {text}: contexts of at least 256 tokens")
    return out


def plan(tasks, contexts, fracs, seeds, seed0, max_positions) -> list[tuple[str, int, int]]:
    """(task, context, seed) of every episode: `seeds` at the smallest context, fewer at longer
    ones (seeds * smallest / context, at least 1), so each context costs about the same."""
    for c in contexts:
        if max_positions and c + 256 > max_positions:
            raise TasksError(f"--contexts {c}: the model holds {max_positions} positions ({c} + the answer do not fit)")
        for f in fracs:
            rows = c * f[0] // f[1]
            if rows < 16:
                raise TasksError(f"--budgets {f[0]}/{f[1]}: {rows} rows at context {c}; at least 16 are needed")
    return [(t, c, seed0 + k) for c in contexts for k in range(max(1, seeds * contexts[0] // c)) for t in tasks]


def stock_decode(lm, ep, n: int = 16) -> float:
    """Seconds per generated token of the model's own full-cache decoding (transformers'
    forward with a DynamicCache, greedy, what `generate` runs), over the episode's stream."""
    import torch
    from transformers import DynamicCache

    from heedful.bench.tasks.policies import stream_texts

    pieces, question = stream_texts(ep, lm.tokenizer)
    ids = lm.tokenizer("".join(t for t, _ in pieces) + question, add_special_tokens=False, return_tensors="pt")
    was = lm.model.config._attn_implementation
    lm.model.config._attn_implementation = "sdpa"
    try:
        with torch.inference_mode():
            cache = DynamicCache()
            out = lm.model(input_ids=ids["input_ids"], past_key_values=cache, use_cache=True, logits_to_keep=1)
            nxt = out.logits[:, -1:].argmax(-1)
            t0 = time.perf_counter()
            for _ in range(n):
                out = lm.model(input_ids=nxt, past_key_values=cache, use_cache=True)
                nxt = out.logits[:, -1:].argmax(-1)
            return (time.perf_counter() - t0) / n
    finally:
        lm.model.config._attn_implementation = was


def _machine() -> str:
    import os

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((x.split(":", 1)[1].strip() for x in f if x.startswith("model name")), name)
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{name}, {os.cpu_count()} CPUs, {gpu}"


class Bars:
    def __init__(self):
        self.bar = None

    def __call__(self, label: str, total: int):
        self.close()
        self.bar = click.progressbar(length=total, label=label.ljust(12), file=sys.stderr, show_eta=True)
        self.bar.__enter__()
        return self.bar.update

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@click.command()
@click.option("--tasks", "task_names", default=None, help="Comma-separated tasks [default: all].")
@click.option("--contexts", default=None, help=f"Context lengths in tokens [default: {DEFAULT_CONTEXTS}].")
@click.option("--budgets", default=None, help=f"KV rows as fractions of the context [default: {DEFAULT_BUDGETS}].")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Episodes per task at the smallest context (fewer at longer ones) [default: 3].")
@click.option("--seed", "seed0", type=click.IntRange(0, 9_999), default=0, show_default=True, help="First seed.")
@click.option("--policies", default=None, help="Comma-separated heedful policies [default: all].")
@click.option("--peers", type=click.Choice(["kvpress", "none"]), default=None,
              help="kvpress: its presses at the same rows, in their own environment [default; none with --quick].")
@click.option("--quick", is_flag=True, help="One task, 1k context, 1/8 of the rows, one seed, four policies.")
@click.option("--png", default="tasks.png", show_default=True, type=click.Path(dir_okay=False), help="The plot.")
@click.option("--speed/--no-speed", default=True, show_default=True,
              help="Time per generated token at the largest context, beside stock full-cache decoding.")
@click.option("--chunk", type=click.IntRange(min=8), default=64, show_default=True, help="Prefill chunk, tokens.")
@click.option("--json", "as_json", is_flag=True, help="Every episode's result as a JSON line before the summary.")
@click.option("--from", "from_files", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Measure nothing: the tables, plot and summary of the result lines of earlier --json runs.")
@model_options
def tasks(task_names, contexts, budgets, seeds, seed0, policies, peers, quick, png, speed, chunk, as_json, from_files,
          model, dtype, device, trust_remote_code):
    """RULER's needle and variable-tracking tasks and MT-Eval's multi-turn recall on a real
    model: accuracy by policy and KV budget, kvpress's presses beside (docs/tasks.md).

    Default model: smollm2 (SmolLM2-135M-Instruct)."""
    from heedful.bench.tasks import peers as peers_mod
    from heedful.bench.tasks.policies import POLICIES
    from heedful.bench.tasks.tasks import TASKS

    t_start = time.perf_counter()
    if from_files:
        return _from_files(from_files, model or "smollm2", png, speed)
    q = QUICK if quick else {}
    chosen_tasks = _names(task_names or q.get("tasks") or ",".join(TASKS), TASKS, "tasks")
    chosen = _names(policies or q.get("policies") or ",".join(POLICIES), POLICIES, "policies")
    fracs = _fractions(budgets or q.get("budgets") or DEFAULT_BUDGETS)
    ctxs = _contexts(contexts or q.get("contexts") or DEFAULT_CONTEXTS)
    n_seeds = seeds or q.get("seeds") or 3
    peers = peers or ("none" if quick else "kvpress")
    plan(chosen_tasks, ctxs, fracs, n_seeds, seed0, None)  # bad budgets before the model loads
    bars = Bars()
    python = peers_mod.ensure_env(lambda m: click.echo(f"peers: {m}", err=True)) if peers == "kvpress" else None
    import torch

    from heedful.models.loading import load_model

    torch.manual_seed(0)
    lm = load_model(model or "smollm2", dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    max_pos = getattr(lm.model.config.get_text_config(decoder=True), "max_position_embeddings", None)
    todo = plan(chosen_tasks, ctxs, fracs, n_seeds, seed0, max_pos)
    model_dir = peers_mod.model_folder(lm, model) if python else None
    peer_run = _Peers(lm, python, model_dir, todo, fracs) if python else None
    try:
        results, speed_rows, pickers_info = _run(lm, todo, chosen, fracs, chosen_tasks, ctxs, chunk, bars,
                                                 _line if as_json else None)
        if peer_run:
            click.echo("waiting for kvpress's presses ...", err=True)
            results += peer_run.results()
        stock = None
        if speed:
            from heedful.bench.tasks.tasks import episode

            stock = stock_decode(lm, episode(chosen_tasks[0], seed0, ctxs[-1], lm.tokenizer))
    finally:
        bars.close()
        if peer_run:
            peer_run.stop()
    _report(lm.name, results, chosen, ctxs, fracs, _speed(speed_rows, stock), pickers_info, png, as_json, peers,
            round(time.perf_counter() - t_start, 1))


def _line(r: dict) -> None:
    click.echo(json.dumps({**r, "fraction": None if r.get("fraction") is None else "%d/%d" % r["fraction"]}))
    sys.stdout.flush()


def _run(lm, todo, chosen, fracs, tasks, ctxs, chunk, bars, echo=None):
    from heedful.bench.tasks.learned import TRAIN_CONTEXT, Pickers
    from heedful.bench.tasks.policies import run
    from heedful.bench.tasks.tasks import Counter, episode

    count = Counter(lm.tokenizer)
    pickers = Pickers(lm, context=min(TRAIN_CONTEXT, ctxs[0]), progress=bars) if "learned" in chosen else None
    results, speed_rows = [], {}
    try:
        if pickers:
            for t in tasks:
                pickers.for_task(t)
        per_ep = sum(1 if p == "full" else len(fracs) for p in chosen)
        advance = bars("episodes", len(todo) * per_ep)
        for task, ctx, seed in todo:
            ep = episode(task, seed, ctx, lm.tokenizer, count)
            for p in chosen:
                for f in ([None] if p == "full" else fracs):
                    rows = None if f is None else ctx * f[0] // f[1]
                    pk = pickers.for_task(task) if p == "learned" else None
                    if p == "learned" and pk is None:
                        advance(1)
                        continue
                    r = run(lm, ep, p, rows or 0, picker=pk, chunk=chunk)
                    r.update(task=task, seed=seed, context=ctx, fraction=f, rows=rows)
                    results.append(r)
                    if echo:  # as it is measured: a run cut short still has its lines
                        echo(r)
                    if ctx == ctxs[-1] and r["gen_tokens"]:
                        speed_rows.setdefault(p, []).append((r["gen_seconds"], r["gen_tokens"]))
                    advance(1)
        info = pickers.summaries if pickers else {}
    finally:
        if pickers:
            pickers.close()
    return results, speed_rows, info


class _Peers:
    """kvpress's presses on the run's episodes, in their own process, while heedful's
    policies run (the two CPUs share the work); results() waits and reads them back."""

    def __init__(self, lm, python, model_dir, todo, fracs):
        import threading

        from heedful.bench.tasks.peers import PRESSES, requests
        from heedful.bench.tasks.tasks import Counter, episode

        count = Counter(lm.tokenizer)
        self.eps = [episode(t, s, c, lm.tokenizer, count) for t, c, s in todo]
        self.fracs = fracs
        self.reqs = requests(self.eps, lm.tokenizer, PRESSES, lambda ep: [ep["context"] * f[0] // f[1] for f in fracs])
        self.box: dict = {}
        self.thread = threading.Thread(target=self._work, args=(python, model_dir), daemon=True)
        self.thread.start()

    def _work(self, python, model_dir):
        from heedful.bench.tasks.peers import run_requests

        try:
            self.box["answers"] = run_requests(python, model_dir, self.reqs, started=self.box.__setitem__)
        except BaseException as e:  # handed to the main thread
            self.box["error"] = e

    def stop(self):
        proc = self.box.get("proc")
        if proc is not None and proc.poll() is None:
            proc.kill()

    def results(self):
        self.thread.join()
        if "error" in self.box:
            raise self.box["error"]
        return _peer_results(self.eps, self.reqs, self.box["answers"], self.fracs)


def _peer_results(eps, reqs, answers, fracs):
    from heedful.bench.tasks.tasks import score

    by_rows = {(ep["context"], ep["context"] * f[0] // f[1]): f for ep in eps for f in fracs}
    out = []
    for r in reqs:
        a, ep = answers[r["id"]], eps[r["episode"]]
        if "error" in a:
            raise HeedfulError(f"--peers kvpress: {r['press']} failed on {ep['task']} seed {ep['seed']}: {a['error']}")
        out.append({"policy": f"kvpress:{r['press']}", "task": ep["task"], "seed": ep["seed"],
                    "context": ep["context"], "fraction": None if r["press"] == "none" else by_rows[(ep["context"], r["rows"])],
                    "rows": r["rows"] or None, "score": score(a["answer"], ep["answers"]),
                    "answer": a["answer"].strip()[:200], "seconds": round(a["seconds"], 3),
                    "versions": {k: v for k, v in answers["_ready"].items() if k != "ready"}})
    return out


def _speed(speed_rows: dict, stock) -> dict:
    speed = {p: round(1000 * sum(s for s, _ in v) / sum(n for _, n in v), 1) for p, v in speed_rows.items()}
    if speed and stock is not None:
        speed["stock full-cache"] = round(1000 * stock, 1)
    return speed


def _report(name, results, chosen, ctxs, fracs, speed, pickers_info, png, as_json, peers, seconds, extra=None):
    from heedful.bench.tasks.report import accuracy, mean_by_budget, plot, tables

    if as_json:  # heedful's lines went out as they were measured; the peers' now
        for r in results:
            if r["policy"].startswith("kvpress"):
                _line(r)
    order = chosen + sorted({r["policy"] for r in results if r["policy"].startswith("kvpress")},
                            key=lambda p: (p != "kvpress:none", p))
    for line in tables(results, order):
        click.echo(line)
    if speed:
        click.echo(f"\nms per generated token at context {ctxs[-1]} (the answer's tokens; all rows for full):")
        for p, ms in speed.items():
            click.echo(f"  {p:<20} {ms:>8.1f}")
    machine = _machine()
    seeds = sorted({r["seed"] for r in results})
    n_tasks = len({r["task"] for r in results})
    took = f"{seconds / 60:.1f} min" if seconds else "rendered from --json lines"
    title = f"{name}: {n_tasks} tasks, seeds {seeds[0]}-{seeds[-1]}, {machine}, {took}"
    plot(results, png, title)
    click.echo(f"plot: {png}")
    summary = {"model": name, "machine": machine, "seeds": seeds, "contexts": ctxs,
               "budgets": ["%d/%d" % f for f in fracs], "episodes": len({(r["task"], r["context"], r["seed"])
                                                                          for r in results}),
               "peers": peers, "accuracy": mean_by_budget(results), "by_task": accuracy(results),
               "ms_per_token": speed, "learned": pickers_info, "seconds": seconds, **(extra or {})}
    click.echo(json.dumps(summary))


def _from_files(files, name, png, speed_on):
    """--from: the tables, plot and summary of JSON lines that earlier runs printed (--json)."""
    from heedful.bench.tasks.policies import POLICIES

    results = []
    for f in files:
        try:
            with open(f) as fh:
                for k, line in enumerate(fh, 1):
                    if not line.startswith('{"policy"'):
                        continue
                    try:
                        r = json.loads(line)
                        r["fraction"] = tuple(int(x) for x in r["fraction"].split("/")) if r["fraction"] else None
                        results.append(r)
                    except (ValueError, KeyError, AttributeError):
                        raise TasksError(f"--from {f}:{k}: not a result line of bench tasks --json") from None
        except OSError as e:
            raise TasksError(f"--from {f}: {e.strerror}") from None
    if not results:
        raise TasksError("--from: no result lines (run bench tasks --json and keep its output)")
    ctxs = sorted({r["context"] for r in results})
    fracs = sorted({r["fraction"] for r in results if r["fraction"]}, key=lambda f: f[0] / f[1])
    rows: dict = {}
    for r in results:
        if speed_on and r["context"] == ctxs[-1] and r.get("gen_tokens"):
            rows.setdefault(r["policy"], []).append((r["gen_seconds"], r["gen_tokens"]))
    chosen = [p for p in POLICIES if any(r["policy"] == p for r in results)]
    _report(name, results, chosen, ctxs, fracs, _speed(rows, None), {}, png, False, "from files", 0.0,
            {"from": [str(f) for f in files]})
