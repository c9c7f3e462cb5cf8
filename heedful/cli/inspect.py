"""`heedful inspect`: attention-sink and gate diagnostics of a model over a text."""

from __future__ import annotations

import json

import click

from heedful.app.options import model_options

DEFAULT_TEXT = ("Facts: The code for the red door is 4821. Mia was born in Oslo.\n"
                "Tom walked to the park in the morning. The sun was warm. A dog slept under the tree. "
                "Nobody knew where the key had gone.\nQuestion: What is the code for the red door?\nAnswer: 4821.")


@click.command()
@click.argument("text", required=False)
@click.option("--file", "path", type=click.Path(dir_okay=False), default=None, help="Read the text from a file.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=None,
              help="Cut the text to this many tokens [default: the model's context length].")
@click.option("--json", "as_json", is_flag=True, help="Print the diagnostics as one JSON object.")
@model_options
def inspect(text, path, max_tokens, as_json, model, dtype, device, trust_remote_code):
    """Gate and sink diagnostics: first-token attention share, largest hidden activation,
    mean output-gate value, per layer and averaged, over TEXT (or --file, or a built-in
    recall episode)."""
    from heedful.errors import HeedfulError
    from heedful.models.inspect import diagnose_text, format_table
    from heedful.models.loading import load_model

    if text is not None and path is not None:
        raise HeedfulError("give either TEXT or --file, not both")
    if path is not None:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as e:
            raise HeedfulError(f"--file {path}: {e.strerror if isinstance(e, OSError) else 'not UTF-8 text'}") from None
    if text is None:
        text = DEFAULT_TEXT
    if not text.strip():
        raise HeedfulError("the text is empty")
    loaded = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                        attn_implementation="eager")
    d = diagnose_text(loaded.model, loaded.tokenizer, text, max_tokens)
    if as_json:
        click.echo(json.dumps({"model": loaded.name, "gated": loaded.gated, **d.to_dict()}))
    else:
        click.echo(f"model: {loaded.name} ({'gated' if loaded.gated else 'ungated'}, "
                   f"{type(loaded.model).__name__})")
        click.echo(format_table(d))
