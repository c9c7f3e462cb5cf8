"""The `heedful` command line: one click group, each command in its own module of this
package (bench's measurements in heedful.bench, training in heedful.train), loaded lazily."""

from __future__ import annotations

import sys

import click

from heedful.cli.lazy import LazyGroup
from heedful.errors import HeedfulError

# name -> "module:attribute" of a click.Command
COMMANDS = {
    "demo": "heedful.cli.demo:demo",
    "generate": "heedful.cli.generate:generate",
    "chat": "heedful.cli.chat:chat",
    "replay": "heedful.cli.replay:replay",
    "recall": "heedful.cli.recall:recall",
    "export": "heedful.cli.export:export",
    "sessions": "heedful.cli.sessions:sessions",
    "bench": "heedful.cli.bench:bench",
    "train": "heedful.cli.train:train",
    "learn": "heedful.cli.learn:learn",
    "inspect": "heedful.cli.inspect:inspect",
    "models": "heedful.cli.models:models",
    "serve": "heedful.cli.serve:serve",
}


@click.group(cls=LazyGroup, commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="heedful")
def cli():
    """heedful: pin what matters, forget the rest, generate without bound."""


def main(argv=None):
    """Entry point: bad input -> one line on stderr and exit 2; anything else -> exit 1."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except HeedfulError as e:
        click.echo(f"heedful: error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("heedful: aborted", err=True)
        sys.exit(1)
    except click.UsageError as e:  # bad flags or arguments: one line too, naming them
        where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        click.echo(f"heedful: error: {e.format_message()}{where}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(0)
