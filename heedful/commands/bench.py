"""`heedful bench ...`: benchmarks that print figures measured side by side in one run."""

from __future__ import annotations

import importlib
import importlib.util

import click

SUBCOMMANDS = {
    "stream": "heedful.commands.bench_stream:stream",
    "kernels": "heedful.commands.bench_kernels:kernels",
    "store": "heedful.commands.bench_store:store",
    "retention": "heedful.commands.bench_retention:retention",
    "tui": "heedful.commands.bench_tui:tui",
}


class _LazyBench(click.Group):
    def list_commands(self, ctx):
        return sorted(n for n, t in SUBCOMMANDS.items() if importlib.util.find_spec(t.split(":")[0]))

    def get_command(self, ctx, name):
        target = SUBCOMMANDS.get(name)
        if target is None or not importlib.util.find_spec(target.split(":")[0]):
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyBench)
def bench():
    """Benchmarks: decode latency and memory (stream), kernels, store, retention, tui."""
