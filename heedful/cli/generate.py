"""`heedful generate`: the headless main job. Streams text (or JSON Lines) to stdout; with
`--db` the run is recorded as a session, and `--session ID` continues a stored one."""

from __future__ import annotations

import json
import os
import sys

import click

from heedful.app.options import check_picker, given_settings, model_options, scale_options, scale_settings, session_options
from heedful.errors import HeedfulError, TargetError
from heedful.limits import MAX_GENERATE, MAX_PROMPT_CHARS
from heedful.spans import Spans


class OutputFault(HeedfulError):
    """The output could not be written (a full device, an I/O error): a fault, exit 1."""

    exit_code = 1


def output_failed(e: OSError, what: str = "standard output") -> OutputFault:
    """The one line for a write that failed; standard output then goes to /dev/null, so the
    interpreter's last flush cannot fail again with a traceback."""
    if what == "standard output":
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
            pass
    return OutputFault(f"{what}: cannot write: {e.strerror or e}")


class _Checked:
    """stdout whose failures (other than a reader that left) are one line, exit 1."""

    def __init__(self, out):
        self.out = out

    def write(self, text: str) -> None:
        try:
            self.out.write(text)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise output_failed(e) from None

    def flush(self) -> None:
        try:
            self.out.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise output_failed(e) from None


def utf8_arg(value: str | None, option: str) -> str | None:
    """A command-line value as valid Unicode: bytes that are not UTF-8 (they reach Python as
    lone surrogates) are one line naming the option, not an error deep in SQLite."""
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise HeedfulError(f"{option}: not valid UTF-8 (byte 0x{ord(value[e.start]) - 0xDC00:02x} at "
                               f"character {e.start + 1})") from None
    return value


def parse_target(value: str, option: str = "--pin"):
    """`/regex/` is a regex; anything else is literal text."""
    if len(value) >= 2 and value.startswith("/") and value.endswith("/"):
        from heedful.selector.targets import compile_regex

        try:
            return compile_regex(value[1:-1])
        except TargetError as e:
            raise TargetError(f"{option} {value}: bad {e}") from None
    return value



@click.command()
@click.argument("prompt", required=False)
@click.option("--file", "prompt_file", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Read the prompt from this file (- : standard input; PROMPT may also be -).")
@click.option("--chat", is_flag=True, help="Talk in turns through the model's chat template: the prompt is a user "
                                           "turn, the reply stops at the end of the assistant's turn.")
@click.option("--system", default=None, metavar="TEXT", help="A system turn before the prompt (implies --chat).")
@click.option("-n", "--max-tokens", "n", type=click.IntRange(0, MAX_GENERATE), default=128, show_default=True,
              help="Tokens to generate.")
@click.option("--pin", "pins", multiple=True, metavar="TEXT|/REGEX/",
              help="Pin text of the prompt (every occurrence) before generating; repeatable.")
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="Record the run as a session of this SQLite store (not recorded without --db or --session).")
@click.option("--session", "session_id", type=int, default=None,
              help="Continue this stored session (its settings; flags given here override them); PROMPT is "
                   "then optional. Store: --db, else $HEEDFUL_DB or ~/.local/share/heedful/heedful.db.")
@click.option("--title", default=None, help="Title of a new recorded session [default: the prompt's start].")
@session_options
@model_options
@scale_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per token, then a summary object.")
@click.option("--ignore-eos", is_flag=True, help="Keep generating past the end-of-sequence token.")
@click.option("--picker", default=None, metavar="DIR", type=click.Path(file_okay=False),
              help="A picker made by `heedful learn`: with --auto-pin it pins what it scores high, else the "
                   "summary lists its suggestions.")
@click.option("--auto-pin", is_flag=True, help="Pin the words the picker scores above its threshold as they "
                                               "stream in (the prompt's before prefill), within the budget.")
@click.option("--adapter", default=None, metavar="DIR", type=click.Path(file_okay=False),
              help="A peft LoRA adapter loaded over the model.")
@click.pass_context
def generate(ctx, prompt, prompt_file, chat, system, n, pins, db, session_id, title, as_json, ignore_eos, picker,
             auto_pin, adapter, model, dtype, device, trust_remote_code, **settings):
    """Generate from PROMPT with a bounded, pinned KV cache, streaming to stdout.

    With --chat (or --system) the prompt is a user turn of a conversation, through the
    model's chat template: `cat notes.txt | heedful generate --chat -`."""
    from heedful.app.distributed import Recording, start
    from heedful.app.open import resume, session_for
    from heedful.models.loading import load_model

    title = utf8_arg(title, "--title")
    prompt = read_prompt(prompt, prompt_file)
    chat = chat or system is not None
    scale = scale_settings(settings)
    if prompt is None and session_id is None:
        raise click.UsageError("PROMPT is required (unless --session continues a stored session)")
    check_picker(picker, auto_pin, scale)
    # outside torchrun --tp is one line; under it, rank 0 alone speaks
    ranks = start(scale.get("tp"), device=device, adapter=adapter, **{k: v for k, v in scale.items() if k != "tp"})
    with ranks.guard():
        rec = Recording(ranks, db, session_id, title or (prompt or "")[:60])
        try:
            # the model first: the picker is checked against it before anything is recorded
            lm = load_model(model if model is not None else rec.stored_model(), dtype=dtype, device=device,
                            trust_remote_code=trust_remote_code, **({"adapter": adapter} if adapter else {}),
                            **scale)
            pk = None
            if picker:
                from heedful.learn.picker import Picker

                pk = Picker.load(picker, lm)
            if session_id is not None:
                session = resume(rec.store, session_id, lm=lm, record=ranks.main, atomic=rec.atomic, hold=True,
                                 **given_settings(ctx, settings))
            else:
                session = session_for(lm, recorder=rec.new_recorder(), **settings)
            if chat and session.template is None:
                what = "--system" if system is not None else "--chat"
                raise HeedfulError(f"{what}: {lm.name} has no chat template (a base model: give plain text, "
                                   "without --chat or --system)")
            summary = None
            try:
                if system is not None:
                    session.say(system, "system")
                # held until every check has passed (prompt, pins): a refused run writes nothing
                ready = session.recorder.release if rec.wanted and not rec.atomic and ranks.main else None
                summary = _run(session, prompt, pins, n, as_json, ignore_eos, pk, auto_pin,
                               out=_Survivor(sys.stdout) if ranks.parallel else _Checked(sys.stdout), chat=chat,
                               ready=ready)
            except BrokenPipeError:
                # the reader of stdout left (`heedful generate --json | head -2`): not an error, and
                # what was generated is kept; stdout goes to /dev/null so the final flush cannot fail
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            finally:
                session.recorder.close()
            sid = rec.finish(session)  # a parallel run: every rank agrees, then rank 0 commits
        finally:
            rec.close()
    if summary is not None:
        _summarize(session, summary, sid, as_json)
    if sid is not None and not as_json:
        click.echo(f"session {sid} saved in {rec.path}", err=True)


class _Survivor:
    """stdout for a parallel run: a reader that leaves (`| head`) must not stop rank 0 alone
    while the other ranks go on generating, so what follows goes to /dev/null."""

    def __init__(self, out):
        self.out = out

    def write(self, text: str) -> None:
        try:
            self.out.write(text)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.out.fileno())

    def flush(self) -> None:
        self.write("")
        try:
            self.out.flush()
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.out.fileno())


def read_prompt(prompt: str | None, path: str | None) -> str | None:
    """PROMPT, or the text of --file (or standard input for -), checked as UTF-8 text."""
    if path is not None and prompt is not None:
        raise click.UsageError("give PROMPT or --file, not both")
    if prompt == "-" or path is not None:
        source = path if path is not None else "-"
        try:
            if source == "-":
                data = sys.stdin.buffer.read()
            else:
                with open(source, "rb") as f:
                    data = f.read(MAX_PROMPT_CHARS * 4 + 1)
        except OSError as e:
            raise HeedfulError(f"--file {source}: {e.strerror or e}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise HeedfulError(f"--file {source}: not UTF-8 text (byte {e.start})") from None
        if not text.strip():
            raise HeedfulError(f"--file {source}: empty")
        return text
    return prompt


def _run(session, prompt, pins, n, as_json, ignore_eos, picker=None, auto_pin=False, out=None, chat=False,
         ready=None) -> dict:
    """Prompts, pins and streams the tokens to `out`; returns what the summary adds."""
    targets = [parse_target(p) for p in pins]
    pinner = None
    if auto_pin:
        from heedful.learn.autopin import AutoPinner

        pinner = AutoPinner(picker, session.model)
    if prompt and chat:  # a user turn; pins in its text
        if pinner:
            raise HeedfulError("--auto-pin: not with --chat yet (the picker scores plain prompts)")
        prompt_tokens = len(session.say(prompt, pin=targets))
    elif prompt:  # pins are resolved in the prompt's text and set before it is processed
        if pinner:  # and the picker's, scored before prefill
            prompt_tokens = len(pinner.prompt(session, prompt, targets))
        else:
            prompt_tokens = len(session.prompt(prompt, pin=targets))
    else:  # continuing a session: pins anywhere in its text (evicted text is re-encoded in place)
        prompt_tokens = 0
        for t in targets:
            session.pin(t, occurrence="all")
    if ready is not None:
        ready()
    out = out or sys.stdout
    hidden = set(session.config.stop_ids) & set(getattr(session.tokenizer, "all_special_ids", ()))
    if pinner:
        pinner.start()
    tokens = session.generate(n, stop_at_eos=not ignore_eos)
    try:
        for tok in tokens:
            if as_json:
                out.write(json.dumps({"index": tok.index, "id": tok.id, "text": tok.text,
                                      "retained": tok.retained}, ensure_ascii=False) + "\n")
            elif tok.id not in hidden:  # the end of a turn is markup, not text to print
                out.write(tok.text)
            out.flush()
            if pinner:
                pinner.token(session, tok)
    except BrokenPipeError:  # the reader left (`| head`): stop here, the run so far is kept
        tokens.close()
        raise
    tokens.close()  # a stream cut short is logged as a stop before the recorder closes
    picked = {}
    if pinner:
        pinner.flush(session)
        pinner.close()
        picked = {"auto_pins": Spans(pinner.auto_spans).to_list(),
                  "scoring_ms_per_token": round(1e3 * pinner.score_seconds_generating / max(1, session.stats().generated), 4)}
    elif picker is not None:
        from heedful.learn.picker import suggest

        picked = {"suggestions": [[s.start, s.end] for s in suggest(picker, session)]}
    return {"prompt_tokens": prompt_tokens, "picked": picked}


def _fold_summary(session) -> dict | None:
    """Automatic fold's part of the summary: the summary rows now resident, and by what."""
    c = session.config
    if not c.fold_budget:
        return None
    return {"summary_rows": session.summary_rows(), "block": c.fold_block, "compressor": c.fold_compressor}


def _summarize(session, summary: dict, sid: int | None, as_json: bool) -> None:
    """The run's last line: a JSON summary on stdout, or a bracketed line on stderr."""
    out, picked = _Checked(sys.stdout), summary["picked"]
    st = session.stats()
    if as_json:
        line = {"event": "summary", "tokens": st.tokens, "resident": st.resident,
                "peak_resident": st.peak_resident, "evicted": st.evicted,
                "tokens_per_s": round(st.tokens_per_s, 2), "prompt_tokens": summary["prompt_tokens"],
                "pins": [list(p) for p in session.pins()], **picked}
        fold = _fold_summary(session)
        if fold:
            line["fold"] = fold
        if sid is not None:
            line["session"] = sid
        out.write(json.dumps(line) + "\n")
    else:
        out.write("\n")
        click.echo(f"[{st.generated} tokens, {st.tokens_per_s:.1f} tok/s, resident {st.resident}/"
                   f"{st.budget} KV rows, peak {st.peak_resident}, evicted {st.evicted}]", err=True)
        fold = _fold_summary(session)
        if fold:
            click.echo(f"[automatic fold: {fold['summary_rows']} summary rows of {fold['block']} tokens, "
                       f"{fold['compressor']}]", err=True)
        for key, spans in picked.items():
            if key != "scoring_ms_per_token":
                shown = "; ".join(repr(session.text(a, b)) for a, b in spans) or "none"
                click.echo(f"[{key.replace('_', ' ')}: {shown}]", err=True)
    out.flush()
