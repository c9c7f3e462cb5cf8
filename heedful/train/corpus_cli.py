"""`heedful train corpus`: build the training corpus, or list the Debian packages it would read
(with each one's licence decision) and the `apt-get install` line of the recipe's packages."""

from __future__ import annotations

from pathlib import Path

import click

from heedful.train.corpus import _auto, build_corpus
from heedful.train.debian import RECIPE_PACKAGES, apt_command, packages as list_packages


@click.command()
@click.argument("out_dir", default="runs/corpus", metavar="[OUT]")
@click.option("--list", "list_only", is_flag=True,
              help="List the Debian packages it would read (licence, accepted or refused, files) and exit.")
@click.option("--apt", "apt_only", is_flag=True, help="Print the apt-get line that installs the recipe's packages.")
@click.option("--packages", type=click.Choice(["installed", "recipe"]), default="installed", show_default=True,
              help="installed: every package under /usr/share/doc; recipe: the recipe's list only.")
@click.option("--max-mb", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Cap the natural text (PyPI and Debian, after deduplication) at this many million characters.")
@click.option("--stories", type=click.IntRange(min=0), default=20000, show_default=True)
@click.option("--recall", type=click.IntRange(min=1), default=20000, show_default=True,
              help="Recall episodes (and as many copy drills).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--doc-root", default="/usr/share/doc", show_default=True, metavar="DIR",
              help="Where the packages' documentation is (another folder: no dpkg lists, info or man pages).")
@click.option("--pypi/--no-pypi", default=True, show_default=True,
              help="Also read the docstrings of the installed, permissively licensed Python distributions.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes reading Debian packages (the result does not depend on it).")
def corpus(out_dir, list_only, apt_only, packages, max_mb, stories, recall, seed, doc_root, pypi, workers):
    """Build the corpus into OUT (deterministic; manifest.json lists every source's licence)."""
    if apt_only:
        click.echo(apt_command())
        return
    only = list(RECIPE_PACKAGES) if packages == "recipe" else None
    if list_only:
        pkgs = list_packages(Path(doc_root), *(_auto("auto", p, doc_root) for p in (
            "/usr/share/info", "/usr/share/man", "/var/lib/dpkg/info", "/var/lib/dpkg/status")), only=only)
        for p in pkgs:
            state = "read" if p.accepted and p.files else ("refused" if not p.accepted else "no text")
            click.echo(f"{state:8} {p.name:32} {len(p.files):6} files  {p.licence[:90]}")
        read = [p for p in pkgs if p.accepted and p.files]
        click.echo(f"{len(read)} of {len(pkgs)} packages would be read "
                   f"({sum(len(p.files) for p in read)} files)", err=True)
        missing = sorted(set(RECIPE_PACKAGES) - {p.name for p in pkgs if p.files})
        if missing:
            click.echo(f"recipe packages not installed: {' '.join(missing)}\n  {apt_command(missing)}", err=True)
        return
    build_corpus(out_dir, seed=seed, site_packages=None if pypi else False, doc_root=doc_root, debian_packages=only, n_stories=stories, n_recall=recall, workers=workers,
                 max_natural_chars=int(max_mb * 1e6) if max_mb else None, log=lambda m: click.echo(m, err=True))
