"""`heedful export`: a session's event log (a replay script) or its tokens as md, txt, jsonl."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from heedful.store.export import FORMATS, WHATS


@click.command()
@click.option("--db", type=click.Path(), default=None,
              help="Database file [default: $HEEDFUL_DB or ~/.local/share/heedful/heedful.db].")
@click.option("--session", "session_id", type=int, default=None, help="Session id [default: the latest].")
@click.option("--what", type=click.Choice(WHATS), default="all", show_default=True,
              help="pinned: the pinned context; retained: what the model sees now; all: the whole "
                   "stream with each token's state; events: the log, as a replay script.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="[default: jsonl for events, md otherwise]")
@click.option("-o", "--output", type=click.Path(allow_dash=True), default="-",
              help="Output file [default: stdout]; written whole or not at all, never over the database.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def export(db, session_id, what, fmt, output, force):
    """Export a session of the store."""
    from heedful.store import Store, default_db_path
    from heedful.store.export import export as run
    from heedful.store.export import output_file

    fmt = fmt or ("jsonl" if what == "events" else "md")
    db_path = Path(db) if db else default_db_path()
    from heedful.cli.generate import output_failed

    with Store.open(db_path, readonly=True) as store:
        store.session(session_id)  # a bad --session fails before the output file is created
        try:
            if output == "-":
                run(store, session_id, what, fmt, sys.stdout)
                sys.stdout.flush()
            else:
                with output_file(output, force=force, protect=[db_path]) as f:
                    run(store, session_id, what, fmt, f)
        except BrokenPipeError:
            raise
        except OSError as e:  # a full device: one line, exit 1
            raise output_failed(e, "standard output" if output == "-" else f"-o {output}") from None
