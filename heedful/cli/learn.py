"""`heedful learn`: learn from recorded sessions what the person pins (a picker, and with
--lora an adapter); `heedful learn episodes`: recorded sessions to learn from, as replay
scripts. See docs/learn.md."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import click

from heedful.app.options import model_options
from heedful.errors import HeedfulError


def _ints(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated integers", param_hint=option) from None


class _Bars:
    """One progress bar at a time on stderr: bars(label, total) -> advance(n)."""

    def __init__(self):
        self.bar = None

    def __call__(self, label: str, total: int):
        self.close()
        self.bar = click.progressbar(length=total, label=label.ljust(14), file=sys.stderr, show_eta=True)
        self.bar.__enter__()
        return self.bar.update

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def check_out(out: Path) -> None:
    """--out must be a new folder or one heedful learn wrote (picker.json), in a writable place."""
    import os

    if out.exists() and not out.is_dir():
        raise HeedfulError(f"--out {out}: is a file, expected a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "picker.json").is_file():
        raise HeedfulError(f"--out {out}: exists and is not a folder heedful learn wrote (no picker.json)")
    parent = out if out.is_dir() else next((p for p in out.absolute().parents if p.exists()), Path("/"))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise HeedfulError(f"--out {out}: {parent} is not a writable folder")


def write_out(out: Path, write) -> None:
    """write(tmp) fills a temporary folder beside `out`; its files then replace out's."""
    import os
    import shutil
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write(tmp)
        out.mkdir(exist_ok=True)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@click.group(invoke_without_command=True)
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="Database of recorded sessions [default: $HEEDFUL_DB or ~/.local/share/heedful/heedful.db].")
@click.option("--session", "session_ids", type=int, multiple=True, help="Learn from these sessions only; repeatable.")
@click.option("--out", type=click.Path(), default=None, help="Folder for picker.safetensors and picker.json.")
@click.option("--layers", default=None, help="Decoder layers read, comma-separated from 0 [default: a third, "
                                             "two thirds, the last].")
@click.option("--head", "kind", type=click.Choice(["mlp", "linear"]), default="mlp", show_default=True)
@click.option("--lookahead", type=click.IntRange(0, 16), default=3, show_default=True,
              help="Tokens after a token that its score may read (its pin waits for them).")
@click.option("--epochs", type=click.IntRange(1, 1000), default=30, show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Score at which auto-pin pins [default: the best F1 on the validation sessions, at most 0.5].")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True)
@click.option("--lora", is_flag=True, help="Also train a LoRA adapter (peft) whose attention goes to what is pinned.")
@click.option("--lora-steps", type=click.IntRange(1, 100000), default=200, show_default=True)
@click.option("--lora-weight", type=click.FloatRange(0, 100), default=0.1, show_default=True,
              help="Weight of the attention-on-pins loss beside the next-token loss.")
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print the training summary as one JSON object.")
@click.pass_context
def learn(ctx, db, session_ids, out, layers, kind, lookahead, epochs, threshold, seed, lora, lora_steps, lora_weight,
          model, dtype, device, trust_remote_code, as_json):
    """Learn from recorded sessions which tokens the person pins: writes a picker to --out
    (for --picker DIR --auto-pin on generate and replay, and bench retention)."""
    if ctx.invoked_subcommand is not None:
        return
    if out is None:
        raise click.UsageError("--out DIR is required (or a subcommand: episodes)")
    from heedful.learn.fit import learn as fit, read_sessions
    from heedful.models.loading import load_model
    from heedful.store import Store, default_db_path

    out_path = Path(out)
    check_out(out_path)
    layer_list = _ints(layers, "--layers") if layers else None
    db_path = Path(db) if db else default_db_path()
    if not db_path.exists():
        raise HeedfulError(f"--db {db_path}: no such database")
    bars = _Bars()
    with Store.open(db_path, readonly=True) as store:
        if model is None:  # the model the sessions were recorded with
            sessions, _ = read_sessions(store, session_ids)
            names = sorted({r.model or "default" for r in sessions})
            if len(names) > 1:
                raise HeedfulError(f"the sessions were recorded with several models ({', '.join(names)}): "
                                   "choose one with --model (and --session)")
            model = names[0] if names else None
        lm = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        adapter_info, adapter_dir = None, None
        try:
            if lora:
                from heedful.learn.lora import train_lora

                lm, adapter_info, adapter_dir = train_lora(store, lm, session_ids=session_ids, steps=lora_steps,
                                                           seed=seed, weight=lora_weight, progress=bars)
            picker, summary = fit(store, lm, session_ids=session_ids, layers=layer_list, kind=kind, epochs=epochs,
                                  seed=seed, lookahead=lookahead, threshold=threshold, progress=bars)
        except BaseException:
            if adapter_dir is not None:
                shutil.rmtree(adapter_dir, ignore_errors=True)
            raise
        finally:
            bars.close()
    from heedful.learn.autopin import scoring_cost

    summary["scoring_cost"] = scoring_cost(lm, picker)
    if adapter_info:
        summary["lora"] = adapter_info

    def write(tmp: Path):
        picker.save(tmp)
        if adapter_dir is not None:
            for f in adapter_dir.iterdir():
                shutil.copy2(f, tmp / f.name)

    try:
        write_out(out_path, write)
    finally:
        if adapter_dir is not None:
            shutil.rmtree(adapter_dir, ignore_errors=True)
    summary["out"] = str(out_path)
    if as_json:
        click.echo(json.dumps(summary))
        return
    h = summary["held_out"]
    click.echo(f"picker: {out_path}/picker.safetensors, picker.json ({summary['sessions']['with_pins']} sessions "
               f"with pins, {summary['tokens']} tokens, {summary['positives']} pinned)")
    click.echo(f"held-out ({h['sessions']} sessions): precision {h['precision']:.3f}  recall {h['recall']:.3f}  "
               f"PR-AUC {h['pr_auc']:.3f}  precision at the pin budget {h['precision_at_budget']:.3f}  "
               f"(threshold {picker.threshold:.3f})")
    c = summary["scoring_cost"]
    click.echo(f"scoring while generating: {c['scoring_ms_per_token']:.3f} ms per token, "
               f"{c['scoring_share']:.1%} of a {c['ms_per_token']:.2f} ms step")
    if adapter_info:
        a = adapter_info
        click.echo(f"LoRA adapter: {out_path}/adapter_model.safetensors ({a['steps']} steps; held-out attention "
                   f"on pins {a['pinned_mass_before']:.3f} -> {a['pinned_mass_after']:.3f}, next-token loss "
                   f"{a['lm_loss_before']:.3f} -> {a['lm_loss_after']:.3f}); use it with --adapter {out_path}")


@learn.command()
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Folder: scripts/NNNN.jsonl (one replay script per session) and episodes.jsonl.")
@click.option("-n", "--sessions", "n", type=click.IntRange(1, 100000), default=200, show_default=True)
@click.option("--arrangement", default="first,after", show_default=True,
              help="Where the facts stand, comma-separated, in turn: first, after, scattered.")
@click.option("--sentences", type=click.IntRange(2, 200), default=22, show_default=True,
              help="Sentences per session (facts included).")
@click.option("--window", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--budget", type=click.IntRange(min=2), default=128, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True)
def episodes(out, n, arrangement, sentences, window, budget, seed):
    """Recorded sessions to learn from: recall episodes as replay scripts in which the person
    pins each fact as it streams in (replay them: heedful replay OUT/scripts/*.jsonl --db DB)."""
    from heedful.learn.episodes import write_episodes

    arr = [a.strip() for a in arrangement.split(",") if a.strip()]
    res = write_episodes(Path(out), n, arr, seed=seed, n_sentences=sentences, window=window, budget=budget)
    click.echo(f"{res['episodes']} scripts in {res['scripts']} ({', '.join(arr)}); episodes for bench retention: "
               f"{res['episodes_file']}")
