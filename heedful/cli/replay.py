"""`heedful replay SCRIPT.jsonl`: runs a replay script into a new session of the store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from heedful.app.options import model_options


@click.command()
@click.argument("script", type=click.Path(dir_okay=False))
@click.option("--db", type=click.Path(), default=None,
              help="Database file [default: $HEEDFUL_DB or ~/.local/share/heedful/heedful.db].")
@model_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per operation's result, then a summary.")
def replay(script, db, model, dtype, device, trust_remote_code, as_json):
    """Replay SCRIPT.jsonl (the format `heedful export --what events` writes).

    The whole script is checked first; a bad line is reported as FILE:LINE: reason (exit 2).
    The session is written to the database only if every operation succeeds. --model
    overrides the model the script's config line names."""
    from heedful.app.replay import run_script
    from heedful.app.script import parse_script
    from heedful.store import Store, default_db_path
    from heedful.store.db import check_writable

    steps = parse_script(script)
    db_path = Path(db) if db else default_db_path()
    # refuse a database the run could not be written to before loading the model, not after
    # the run (creating nothing: a missing database is made when the run lands)
    check_writable(db_path)
    if db_path.exists():
        Store.open(db_path, create=False).close()
    out = sys.stdout

    def show(r):
        if as_json:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
        elif r["op"] == "generate":
            out.write(r["text"])
        out.flush()

    result = run_script(steps, script, model=model, dtype=dtype, device=device,
                        trust_remote_code=trust_remote_code, on_result=show)
    with Store.open(db_path) as store:
        sid = result.recorder.commit(store)
    st = result.session.stats()
    summary = {"event": "summary", "session": sid, "tokens": st.tokens, "resident": st.resident,
               "peak_resident": st.peak_resident, "evicted": st.evicted, "db": str(db_path)}
    if as_json:
        out.write(json.dumps(summary) + "\n")
    else:
        out.write("\n")
        click.echo(f"[session {sid} in {db_path}: {st.tokens} tokens, resident {st.resident}, "
                   f"evicted {st.evicted}]", err=True)
