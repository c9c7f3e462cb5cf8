"""The `heedful` command line. Each command lives in its own module and is loaded lazily,
so `heedful --help` stays fast and a broken optional part cannot break the others."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from heedful.errors import HeedfulError

# name -> "module:attribute" of a click.Command
COMMANDS = {
    "generate": "heedful.commands.generate:generate",
    "chat": "heedful.commands.chat:chat",
    "replay": "heedful.commands.replay:replay",
    "export": "heedful.commands.export:export",
    "sessions": "heedful.commands.sessions:sessions",
    "bench": "heedful.commands.bench:bench",
    "train": "heedful.commands.train:train",
    "inspect": "heedful.commands.inspect:inspect",
}


def _available(target: str) -> bool:
    return importlib.util.find_spec(target.split(":")[0]) is not None


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(n for n, t in COMMANDS.items() if _available(t))

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None or not _available(target):
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="heedful")
def cli():
    """heedful: pin what matters, forget the rest, generate without bound."""


def main(argv=None):
    """Entry point: bad input -> one line on stderr and exit 2; anything else -> exit 1."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except HeedfulError as e:
        click.echo(f"heedful: error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("heedful: aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(0)
