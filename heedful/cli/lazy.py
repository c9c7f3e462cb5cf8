"""A click group whose commands are imported only when used: `heedful --help` stays fast (no
torch import) and a broken optional part cannot break the other commands."""

from __future__ import annotations

import importlib
import importlib.util

import click


def _available(target: str) -> bool:
    return importlib.util.find_spec(target.split(":")[0]) is not None


class LazyGroup(click.Group):
    """`commands` maps a name to "module:attribute" of a click.Command."""

    def __init__(self, *args, commands: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(commands or {})

    def list_commands(self, ctx):
        return sorted(n for n, t in self.lazy_commands.items() if _available(t))

    def get_command(self, ctx, name):
        target = self.lazy_commands.get(name)
        if target is None or not _available(target):
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)
