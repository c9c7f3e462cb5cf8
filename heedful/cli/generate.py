"""`heedful generate`: the headless main job. Streams text (or JSON Lines) to stdout."""

from __future__ import annotations

import json
import re
import sys

import click

from heedful.app.options import model_options, session_options
from heedful.errors import TargetError


def parse_pin(value: str):
    """`/regex/` is a regex; anything else is literal text."""
    if len(value) >= 2 and value.startswith("/") and value.endswith("/"):
        try:
            return re.compile(value[1:-1])
        except re.error as e:
            raise TargetError(f"--pin {value}: bad regex: {e}") from None
    return value


@click.command()
@click.argument("prompt")
@click.option("-n", "--max-tokens", "n", type=click.IntRange(min=0), default=128, show_default=True,
              help="Tokens to generate.")
@click.option("--pin", "pins", multiple=True, metavar="TEXT|/REGEX/",
              help="Pin text of the prompt (every occurrence) before generating; repeatable.")
@session_options
@model_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per token, then a summary object.")
@click.option("--ignore-eos", is_flag=True, help="Keep generating past the end-of-sequence token.")
def generate(prompt, n, pins, as_json, ignore_eos, **opts):
    """Generate from PROMPT with a bounded, pinned KV cache, streaming to stdout."""
    from heedful.app.open import open_session

    session = open_session(**opts)
    session.prompt(prompt)
    for p in pins:
        target = parse_pin(p)
        session.pin(target, occurrence="all")
    out = sys.stdout
    try:
        for tok in session.generate(n, stop_at_eos=not ignore_eos):
            if as_json:
                out.write(json.dumps({"index": tok.index, "id": tok.id, "text": tok.text,
                                      "retained": tok.retained}, ensure_ascii=False) + "\n")
            else:
                out.write(tok.text)
            out.flush()
    finally:
        st = session.stats()
        if as_json:
            out.write(json.dumps({"event": "summary", "tokens": st.tokens, "resident": st.resident,
                                  "peak_resident": st.peak_resident, "evicted": st.evicted,
                                  "tokens_per_s": round(st.tokens_per_s, 2)}) + "\n")
        else:
            out.write("\n")
            click.echo(f"[{st.generated} tokens, {st.tokens_per_s:.1f} tok/s, resident {st.resident}/"
                       f"{st.budget} KV rows, peak {st.peak_resident}, evicted {st.evicted}]", err=True)
        out.flush()
        session.recorder.close()
