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

    def format_commands(self, ctx, formatter):
        """The command list of --help, each line from the command function's docstring read
        from its source (ast), so listing commands imports none of them (no torch)."""
        rows = []
        for name in self.list_commands(ctx):
            text = _docstring(self.lazy_commands[name])
            rows.append((name, _short(text, max(formatter.width - 6 - len(name), 45))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _short(text: str, limit: int) -> str:
    """The first sentence of the first paragraph, cut to `limit` characters at a word."""
    first = " ".join(text.split("\n\n")[0].split())
    end = first.find(". ")
    first = first[: end + 1] if end >= 0 else first
    if len(first) <= limit:
        return first
    return first[: limit - 3].rsplit(" ", 1)[0] + "..."


def _docstring(target: str) -> str:
    import ast

    module, attr = target.split(":")
    spec = importlib.util.find_spec(module)
    try:
        tree = ast.parse(open(spec.origin, encoding="utf-8").read())
    except (OSError, SyntaxError, TypeError):
        return ""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == attr:
            return ast.get_docstring(node) or ""
    return ""
