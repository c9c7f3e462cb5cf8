"""`heedful recall`: bring text back into a stored session's memory, headlessly (the TUI's
palette does the same): the session is resumed, the target re-encoded and pinned, and the
recall recorded like any other operation."""

from __future__ import annotations

import json

import click

from heedful.app.options import model_options
from heedful.cli.generate import parse_target


@click.command()
@click.argument("target", required=False, metavar="TEXT|/REGEX/")
@click.option("--range", "span", nargs=2, type=click.IntRange(min=0), default=None, metavar="START END",
              help="Recall tokens [START, END) instead of text.")
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="SQLite store (default: $HEEDFUL_DB or ~/.local/share/heedful/heedful.db).")
@click.option("--session", "session_id", type=int, default=None, help="Session id [default: the latest].")
@click.option("--append", is_flag=True, help="Re-encode a copy at the end of the stream, not in place.")
@model_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object: what was recalled and what is pinned.")
def recall(target, span, db, session_id, append, model, dtype, device, trust_remote_code, as_json):
    """Recall TEXT (its last occurrence), /REGEX/ (every match) or --range START END into a
    stored session: evicted tokens are re-encoded in place and pinned, resident ones pinned."""
    from heedful.app.open import resume
    from heedful.store import Store

    if (target is None) == (span is None):
        raise click.UsageError("give TEXT|/REGEX/ or --range START END (one of them)")
    what = parse_target(target, "TARGET") if target is not None else {"range": list(span)}
    with Store.open(db, create=False) as store:
        # held: the resume and the recall land together, or not at all
        session = resume(store, session_id, model=model, dtype=dtype, device=device,
                         trust_remote_code=trust_remote_code, hold=True)
        try:
            ranges = session.recall(what, append=append)
            session.recorder.release()
        except BaseException:
            session.recorder.discard()
            raise
        finally:
            session.recorder.close()
    sid = session.recorder.session_id
    if as_json:
        click.echo(json.dumps({"session": sid, "ranges": [list(r) for r in ranges],
                               "pinned": [list(p) for p in session.pins()], "tokens": len(session)}))
        return
    for a, b in ranges:
        click.echo(f"recalled [{a}, {b}) {session.text(a, b)!r}")
    click.echo(f"session {sid}: {len(session)} tokens, pinned {session.pins()}", err=True)
