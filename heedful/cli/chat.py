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
@click.option("--picker", default=None, metavar="DIR", type=click.Path(file_okay=False),
              help="A picker made by `heedful learn`: the words it would pin are suggested as the text streams "
                   "(a accepts, x rejects, A turns auto-pin on and off).")
@click.option("--auto-pin", is_flag=True, help="Start with auto-pin on: the picker pins what it scores high as the "
                                               "text streams, within the budget (needs --picker).")
@click.option("--system", default=None, metavar="TEXT",
              help="A new conversation's system turn (a model with a chat template).")
@session_options
@model_options
@click.pass_context
def chat(ctx, db, session_id, title, chunk, export_dir, ignore_eos, picker, auto_pin, system, model, dtype, device,
         trust_remote_code, **settings):
    """Watch the model write, mark what matters, see what it remembers.

    With a model whose tokenizer has a chat template (an instruct model: -m smollm2) each
    message is a user turn and the model answers in its turn, stopping at the turn's end; the
    template's markup is drawn dimmed. A model without one continues the text as typed."""
    from heedful.store import Store
    from heedful.tui.app import HeedfulApp, Opened

    if auto_pin and not picker:
        raise click.UsageError("--auto-pin needs --picker DIR")
    if system is not None and session_id is not None:
        raise click.UsageError("--system starts a new conversation: not with --session")
    store = Store.open(db, create=session_id is None)  # resuming creates no database
    opened = []  # the recorder, once the opener has one (closed at the end, whatever happened)

    def opener() -> Opened:
        """Loads the model and opens (or resumes) the session: run by the app in a worker, so
        its screen shows at once (tui/app.py)."""
        from heedful.app.open import open_session, resume, session_for

        lm = pinner = None
        if picker:  # the model first: the picker is checked against it before anything is recorded
            from heedful.learn.autopin import AutoPinner
            from heedful.learn.picker import Picker
            from heedful.models.loading import load_model

            name = model if model is not None or session_id is None else store.session(session_id).config.get("model")
            lm = load_model(name, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
            pk = Picker.load(picker, lm)

            def pinner(session):  # one per session the app shows (tui/suggest.py)
                return AutoPinner(pk, session.model, pinning=False)

        if session_id is not None:
            # only the settings given on this command line override the stored ones
            session = resume(store, session_id, model=model, dtype=dtype, device=device,
                             trust_remote_code=trust_remote_code, lm=lm, **given_settings(ctx, settings))
            opened.append(session.recorder)
        else:
            opened.append(store.new_session(title=title))
            if lm is not None:
                session = session_for(lm, recorder=opened[0], **settings)
            else:
                session = open_session(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                                       recorder=opened[0], **settings)
            if system is not None:
                if session.template is None:
                    raise click.UsageError(f"--system: the model {session.config.model} has no chat template "
                                           "(a base model: type its text as it should continue)")
                session.say(system, "system")
        return Opened(session, opened[0], pinner)

    what = (f"model {model}" if model else f"the model of session {session_id}" if session_id is not None
            else "the default model")
    app = HeedfulApp(opener=opener, store=store, chunk=chunk, export_dir=export_dir, ignore_eos=ignore_eos,
                     auto_pin=auto_pin, loading=f"loading {what} …")
    try:
        app.run()
        if app.load_error is not None:  # one line, exit 2 for a HeedfulError or a UsageError (heedful.cli.main)
            raise app.load_error
    finally:
        for recorder in opened:
            recorder.close()
        store.close()
    if opened and opened[0].session_id is not None:
        click.echo(f"session {opened[0].session_id} saved in {store.path}", err=True)
