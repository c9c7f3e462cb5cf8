"""`heedful bench ...`: benchmarks that print figures measured side by side in one run (the
measurements themselves live in heedful.bench)."""

from __future__ import annotations

import click

from heedful.cli.lazy import LazyGroup

SUBCOMMANDS = {
    "stream": "heedful.bench.stream:stream",
    "kernels": "heedful.bench.kernels:kernels",
    "store": "heedful.bench.store:store",
    "retention": "heedful.bench.retention:retention",
    "fold": "heedful.bench.fold:fold",
    "tui": "heedful.bench.tui:tui",
    "memory": "heedful.bench.memory:memory",
    "chat": "heedful.bench.chat:chat",
    "gpu": "heedful.bench.gpu:gpu",
    "tasks": "heedful.bench.tasks.cli:tasks",
    "serve": "heedful.bench.serve:serve",
}


@click.group(cls=LazyGroup, commands=SUBCOMMANDS)
def bench():
    """Benchmarks: decode latency and memory (stream), kernels, store, retention, fold, tui, peak memory."""
