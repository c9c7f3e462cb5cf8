"""`heedful replay SCRIPT.jsonl ...`: runs replay scripts, each into a new session of the store."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from heedful.app.options import check_picker, model_options, scale_options, scale_settings
from heedful.errors import HeedfulError
from heedful.spans import Spans


@click.command()
@click.argument("scripts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--db", type=click.Path(), default=None,
              help="Database file [default: $HEEDFUL_DB or ~/.local/share/heedful/heedful.db].")
@model_options
@scale_options
@click.option("--picker", default=None, metavar="DIR", type=click.Path(file_okay=False),
              help="A picker made by `heedful learn` (with --auto-pin: pins what it scores high).")
@click.option("--auto-pin", is_flag=True, help="Pin the words the picker scores above its threshold as they stream.")
@click.option("--adapter", default=None, metavar="DIR", type=click.Path(file_okay=False),
              help="A peft LoRA adapter loaded over the model.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per operation's result, then a summary.")
def replay(scripts, db, model, dtype, device, trust_remote_code, picker, auto_pin, adapter, as_json, **scale):
    """Replay SCRIPT.jsonl files (the format `heedful export --what events` writes).

    Each script is checked whole first; a bad line is reported as FILE:LINE: reason. Each
    script runs into its own session, written to the database only if every one of its
    operations succeeds; with several scripts the model is loaded once, a script that fails
    is reported and the others still land, and the exit code is 2 if any failed. --model
    overrides the model the scripts' config lines name.

    Under torchrun with --tp auto, every rank runs the scripts and rank 0 alone prints and
    writes; a script lands once every rank has ended it with the same session."""
    from heedful.app.distributed import start

    scale = scale_settings(scale)
    check_picker(picker, auto_pin, scale)
    ranks = start(scale.get("tp"), device=device, adapter=adapter, **{k: v for k, v in scale.items() if k != "tp"})
    with ranks.guard():
        _replay(ranks, scripts, db, model, dtype, device, trust_remote_code, picker, auto_pin, adapter, as_json,
                scale)


def _replay(ranks, scripts, db, model, dtype, device, trust_remote_code, picker, auto_pin, adapter, as_json, scale):
    from heedful.app.distributed import session_digest
    from heedful.app.replay import model_for, run_script
    from heedful.app.script import parse_script
    from heedful.cli.generate import output_failed
    from heedful.store import Store, default_db_path
    from heedful.store.db import StoreFault, check_writable

    single = len(scripts) == 1
    db_path = Path(db) if db else default_db_path()
    failed: list[str] = []

    def fail(script, e: HeedfulError):
        if single:
            raise e
        click.echo(f"heedful: error: {e}", err=True)
        failed.append(str(script))

    # every script is validated before a model is loaded
    parsed = []
    for script in scripts:
        try:
            parsed.append((script, parse_script(script)))
        except HeedfulError as e:
            fail(script, e)
    # refuse a database the runs could not be written to before loading the model, not after
    # them (creating nothing: a missing database is made when the first run lands)
    if ranks.main:  # the other ranks of a parallel run never touch the store
        check_writable(db_path)
        if db_path.exists():
            Store.open(db_path, create=False).close()
    out = sys.stdout
    models: dict = {}
    pickers: dict = {}

    def show(r):
        nonlocal out
        try:
            if as_json:
                out.write(json.dumps(r, ensure_ascii=False) + "\n")
            elif r["op"] == "generate":
                out.write(r["text"])
            out.flush()
        except BrokenPipeError:  # the reader left (`| head`): the scripts still run and land whole
            out = open(os.devnull, "w")
            try:
                os.dup2(out.fileno(), sys.stdout.fileno())
            except (OSError, ValueError, AttributeError):
                pass
        except OSError as e:  # a full device: one line, exit 1
            raise output_failed(e) from None

    for script, steps in parsed:
        error = None
        try:
            lm = model_for(steps, script, model=model, dtype=dtype, device=device,
                           trust_remote_code=trust_remote_code, cache=models, adapter=adapter, **scale)
            pinner = None
            if picker:
                from heedful.learn.autopin import AutoPinner
                from heedful.learn.picker import Picker

                key = id(lm)
                if key not in pickers:
                    pickers[key] = Picker.load(picker, lm)
                pinner = AutoPinner(pickers[key], lm.model) if auto_pin else None
            try:
                result = run_script(steps, script, lm=lm, on_result=show, autopin=pinner)
            finally:
                if pinner is not None:
                    pinner.close()
        except HeedfulError as e:
            error = e
        # every rank of a parallel run ends the script the same way before rank 0 writes it
        ranks.agree(f"outcome of {script}", str(error) if error else session_digest(result.session))
        if error is not None:
            fail(script, error)
            continue
        sid = None
        if ranks.main:
            try:
                with Store.open(db_path, keep_empty=False) as store:  # a failed first write leaves no file
                    sid = result.recorder.commit(store)
            except StoreFault as e:  # a full disk: the rest would fail too; say which script stopped
                raise StoreFault(f"{script}: not written: {e}") from None
        st = result.session.stats()
        summary = {"event": "summary", "script": str(script), "session": sid, "tokens": st.tokens,
                   "resident": st.resident, "peak_resident": st.peak_resident, "evicted": st.evicted,
                   "db": str(db_path)}
        if pinner is not None:
            summary["auto_pins"] = Spans(pinner.auto_spans).to_list()
        if as_json:
            show(summary)
        else:
            show({"op": "generate", "text": "\n"})
            click.echo(f"[{'' if single else str(script) + ': '}session {sid} in {db_path}: {st.tokens} tokens, "
                       f"resident {st.resident}, evicted {st.evicted}]", err=True)
    if failed:
        raise HeedfulError(f"{len(failed)} of {len(scripts)} scripts failed and were not written: "
                           + ", ".join(failed))
