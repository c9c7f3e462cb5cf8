"""`heedful chat`: the Textual app over a session recorded in the store."""

from __future__ import annotations

import click

from heedful.app.options import given_settings, model_options, session_options


@click.command()
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="SQLite store (default: $HEEDFUL_DB or ~/.local/share/heedful/heedful.db).")
@click.option("--session", "session_id", type=int, default=None, help="Resume this stored session.")
@click.option("--title", default=None, help="Title of a new session.")
@click.option("--chunk", type=click.IntRange(min=1), default=256, show_default=True,
              help="Tokens per press of g (generate / continue).")
@click.option("--export-dir", type=click.Path(file_okay=False), default=None,
              help="Folder for exports (key e) [default: exports/ beside the database].")
@click.option("--ignore-eos", is_flag=True,
              help="Generate past the model's end-of-text token (default: a stream stops there).")
@session_options
@model_options
@click.pass_context
def chat(ctx, db, session_id, title, chunk, export_dir, ignore_eos, model, dtype, device, trust_remote_code,
         **settings):
    """Watch the model write, mark what matters, see what it remembers."""
    from heedful.app.open import open_session, resume
    from heedful.store import Store
    from heedful.tui.app import HeedfulApp

    store = Store.open(db, create=session_id is None)  # resuming creates no database
    if session_id is not None:
        # only the settings given on this command line override the stored ones
        session = resume(store, session_id, model=model, dtype=dtype, device=device,
                         trust_remote_code=trust_remote_code, **given_settings(ctx, settings))
        recorder = session.recorder
    else:
        recorder = store.new_session(title=title)
        session = open_session(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                               recorder=recorder, **settings)
    try:
        HeedfulApp(session, store=store, recorder=recorder, chunk=chunk, export_dir=export_dir,
                   ignore_eos=ignore_eos).run()
    finally:
        recorder.close()
        store.close()
    if recorder.session_id is not None:
        click.echo(f"session {recorder.session_id} saved in {store.path}", err=True)
