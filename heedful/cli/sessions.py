"""`heedful sessions`: the sessions of a store with their counts, or a search of their text."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import click


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


@click.command()
@click.option("--db", type=click.Path(), default=None,
              help="Database file [default: $HEEDFUL_DB or ~/.local/share/heedful/heedful.db].")
@click.option("--search", "text", default=None, help="Find TEXT in session text (evicted text too), to recall it.")
@click.option("--session", "session_id", type=int, default=None, help="Search this session only.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Most search hits shown.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per session or hit.")
def sessions(db, text, session_id, limit, as_json):
    """List the sessions of a store (tokens, events, pinned, evicted), or search them."""
    from heedful.cli.generate import utf8_arg
    from heedful.store import Store, default_db_path

    text = utf8_arg(text, "--search")
    with Store.open(Path(db) if db else default_db_path(), readonly=True) as store:
        if text is not None:
            if session_id is not None:
                store.session(session_id)
            hits = store.search(text, session_id, limit)
            for h in hits:
                if as_json:
                    click.echo(json.dumps(h.to_json(), ensure_ascii=False))
                else:
                    click.echo(f"session {h.session} [{h.start}, {h.end}) {h.state}: {h.text!r}"
                               + ("   recall: {\"op\": \"recall\", \"range\": [%d, %d]}" % (h.start, h.end)
                                  if h.state == "evicted" else ""))
            if not hits and not as_json:
                click.echo(f"no session text matches {text!r}", err=True)
            return
        infos = store.sessions()
        if as_json:
            for i in infos:
                click.echo(json.dumps(i.to_json(), ensure_ascii=False))
            return
        if not infos:
            click.echo(f"no sessions in {store.path}", err=True)
            return
        click.echo(f"{'ID':>4}  {'CREATED':16}  {'TOKENS':>8}  {'EVENTS':>6}  {'PINNED':>6}  {'EVICTED':>8}  "
                   f"{'MODEL':20}  TITLE")
        for i in infos:
            j = i.to_json()
            click.echo(f"{i.id:>4}  {_when(i.created):16}  {i.tokens:>8}  {i.events:>6}  {j['pinned']:>6}  "
                       f"{j['evicted']:>8}  {str(i.model)[-20:]:20}  {i.title or ''}")
