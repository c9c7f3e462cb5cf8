"""Debian documentation packages as training text, each package's licence checked against an
allow-list before a byte of it is read.

A package's files are the ones dpkg lists for it (``/var/lib/dpkg/info/<pkg>.list``) under
the documentation roots (``/usr/share/doc``, ``/usr/share/info``, ``/usr/share/man/man*``: English
pages only), or, where dpkg has no list (a folder that only imitates /usr/share/doc), the files
under ``<doc_root>/<pkg>/``. Readers: :mod:`heedful.train.textformats` (HTML, info, man, text,
gzip'd or not). Files are read in sorted order; the result does not depend on the number of
worker processes.

The licence is read from ``<doc_root>/<pkg>/copyright`` (see :func:`package_licence`); the
policy (which licences are accepted and why) is :data:`ACCEPTED` and docs/model.md.
"""

from __future__ import annotations

import multiprocessing as mp
import re
from dataclasses import dataclass
from pathlib import Path

from heedful.train.paragraphs import Source
from heedful.train.textformats import READERS, kind_of, read_text

DOC_ROOT = Path("/usr/share/doc")
INFO_ROOT = Path("/usr/share/info")
MAN_ROOT = Path("/usr/share/man")
DPKG_INFO = Path("/var/lib/dpkg/info")
DPKG_STATUS = Path("/var/lib/dpkg/status")

# Licences whose text may be copied and used without copyleft conditions: permissive
# licences, public domain, and licences that permit verbatim copying of a manual. Matched
# against the lower-cased short name of a DEP-5 `License:` field (a prefix match).
ACCEPTED = ("mit", "expat", "x11", "bsd-", "bsd", "isc", "apache", "psf", "python", "postgresql", "zlib",
            "public-domain", "public domain", "publicdomain", "cc0", "cc-by-3", "cc-by-4", "cc-by-2",
            "unlicense", "artistic", "mpl-2", "tcl", "hpnd", "ruby", "bsl-1", "boost", "curl", "sqlite",
            "linux-man-pages-copyleft", "verbatim", "permissive", "all-permissive", "unicode", "w3c")
ACCEPTED_EXACT = frozenset({"go",  # the Go licence: BSD-3-Clause wording
                            "zsh",  # the Zsh licence: an MIT-style permission notice
                            "sgi",  # (Boost's copy of the SGI STL notice) use, copy, modify, distribute, sell
                            "rra-keep-this-notice"})  # Russ Allbery's all-permissive notice
# ... and never these (checked first: "cc-by-sa" must not pass as "cc-by-"; "gpl" in "lgpl").
REFUSED = ("gpl", "lgpl", "agpl", "gfdl", "fdl", "cc-by-sa", "cc-by-nc", "cc-by-nd", "opl", "osl",
           "epl", "cpl", "cddl", "eupl", "sspl", "non-free", "proprietary")

# Packages whose copyright file is free-form (not DEP-5) or names licences this module cannot
# judge, read by hand: package -> (licence of the documentation, why).
# PER_FILE: the package is read file by file, a file only when it names an accepted licence
# in an SPDX-License-Identifier line (the Linux man-pages do, page by page).
PER_FILE = "per-file SPDX-License-Identifier"
REVIEWED = {
    "python3.11-doc": ("PSF-2.0", "free-form copyright file: the documentation is under the Python licence; the "
                                  "GPL it names is the compatibility table, other licences cover source files"),
    "python-jinja2-doc": ("BSD-3-clause", "the GPL it names covers ext/jinja.el, in the source package only"),
    "python-biopython-doc": ("Biopython License Agreement (HPND-style)", "License: other is a permission "
                                                                          "notice (use, copy, modify, distribute)"),
    "perl-doc": ("Artistic (of GPL-1+ or Artistic); Expat; Unicode; RRA-KEEP-THIS-NOTICE; the GPL's own text",
                 "every part is Artistic or permissive, except pod/perlgpl.pod, the text of the GPL itself, whose "
                 "own terms permit verbatim copying"),
    "jargon-text": ("public-domain", "the Jargon File is placed in the public domain by its editor"),
    "manpages": (PER_FILE, "pages are under Linux-man-pages-copyleft (verbatim copying), BSD, MIT or GPL; each "
                           "page names its licence"),
    "manpages-dev": (PER_FILE, "as manpages"),
}

# The recipe: documentation packages of Debian 12 (main) whose documentation is under an
# accepted licence; `apt_command()` installs them.
RECIPE_PACKAGES = (
    "python3.11-doc", "postgresql-doc-15", "sqlite3-doc", "rust-doc", "python-django-doc", "python-pandas-doc",
    "golang-1.19-doc", "perl-doc", "sphinx-doc", "python-sqlalchemy-doc", "cmake-doc",
    "apache2-doc", "erlang-doc", "ghc-doc", "tcl8.6-doc", "tk8.6-doc", "python-flask-doc", "python-werkzeug-doc",
    "python-jinja2-doc", "python-cryptography-doc", "python-attr-doc", "python-scipy-doc",
    "python-statsmodels-doc", "python-astropy-doc", "python-sympy-doc", "python-sklearn-doc",
    "python-skimage-doc", "python-dask-doc", "python-xarray-doc", "python-tables-doc", "python-h5py-doc",
    "python-biopython-doc", "python-pil-doc", "python-mpmath-doc", "python-hypothesis-doc",
    "python-pytest-doc", "python-click-doc", "python-scrapy-doc", "python-tornado-doc",
    "python-babel-doc", "python-lmfit-doc", "python-pygments-doc", "zsh-doc", "libx11-doc", "xorg-docs",
    "lua5.1-doc", "jargon-text", "manpages", "manpages-dev", "llvm-14-doc", "clang-14-doc", "libboost1.74-doc",
    "freebsd-manpages",
)


def apt_command(packages=RECIPE_PACKAGES) -> str:
    return "apt-get install -y --no-install-recommends " + " ".join(packages)


# ---------------------------------------------------------------------------------------
# licences


def _term_accepted(term: str) -> bool:
    t = re.sub(r"\s+with\s+.*exception.*$", "", term.strip().lower()).strip("() ")
    if not t or any(t.startswith(r) or ("-" + r) in t for r in REFUSED):
        return False
    return t in ACCEPTED_EXACT or t.startswith(ACCEPTED)


def licence_accepted(expr: str) -> bool:
    """A DEP-5 licence expression: 'A or B' passes when one alternative does, 'A and B'
    (or 'A, B') when every part does."""
    alts = re.split(r"\s+or\s+|\s*\|\s*", expr.strip(), flags=re.I)
    return any(all(_term_accepted(t) for t in re.split(r"\s+and\s+|,\s*", a, flags=re.I) if t.strip())
               for a in alts if a.strip())


_DOC_DIRS = frozenset("doc docs man html info book guide manual manuals tutorial howto faq".split())
_DOC_EXT = re.compile(r"\.(html?|rst|md|texi|texinfo|info|pod)$", re.I)
_NOT_TEXT = re.compile(r"(^|/)(tests?|fonts?|static|_static|images?|img|icons?)(/|$)|"
                       r"\.(png|jpe?g|gif|svg|ico|woff2?|ttf|otf|eot|css|js)$", re.I)


def _doc_pattern(pat: str) -> bool:
    """A DEP-5 file pattern that names documentation text (not tests, fonts or images)."""
    if _NOT_TEXT.search(pat):
        return False
    parts = pat.strip("/").split("/")
    return any(p.lower() in _DOC_DIRS for p in parts[:-1]) or bool(_DOC_EXT.search(parts[-1]))


_COPYLEFT_TEXT = re.compile(r"GNU (Lesser |Library |Affero )?General Public Licen[cs]e|GNU Free Documentation|"
                            r"\bL?GPL\b|ShareAlike|CC-BY-SA|Creative Commons Attribution-Share", re.I)
_PERMISSIVE_TEXT = [
    ("Expat", re.compile(r"Permission is hereby granted, free of charge", re.I)),
    ("BSD", re.compile(r"Redistribution and use in source and binary forms", re.I)),
    ("Apache-2.0", re.compile(r"Apache License,? Version 2", re.I)),
    ("PSF", re.compile(r"PYTHON SOFTWARE FOUNDATION LICENSE", re.I)),
    ("PostgreSQL", re.compile(r"PostgreSQL (Database Management System|License)", re.I)),
    ("ISC/HPND", re.compile(r"Permission to use, copy, modify,? (and/or |and )?distribute", re.I)),
    ("public-domain", re.compile(r"\bpublic domain\b", re.I)),
]
_SPDX = re.compile(r"SPDX-License-Identifier:\s*([^\n*]+?)\s*(\*/|-->)?\s*$", re.M)


def file_licence(head: str) -> str | None:
    """The SPDX-License-Identifier a file states in its first lines, if any."""
    m = _SPDX.search(head)
    return m.group(1).strip() if m else None


def package_licence(copyright_text: str) -> tuple[str, bool, str]:
    """(licence, accepted, how it was decided) from a Debian copyright file.

    DEP-5 files: the licence of the `Files: *` paragraph and of every paragraph whose file
    patterns name documentation (doc, man, html, info, ...); `debian/*` (the packaging) and
    paragraphs for other source files (code that a documentation package does not ship) are
    not counted. All counted expressions must pass. Free-form files: accepted only when a
    permissive licence's wording is there and no copyleft licence is named at all."""
    paras = [p for p in re.split(r"\n\s*\n", copyright_text) if p.strip()]
    stanzas = []
    for p in paras:
        files = re.search(r"^Files:\s*(.*(?:\n[ \t].*)*)", p, re.M)
        lic = re.search(r"^License:[ \t]*(.*)$", p, re.M)
        if files and lic:
            name = lic.group(1).strip() or "; ".join(n for n, pat in _PERMISSIVE_TEXT if pat.search(p)) or "unnamed"
            stanzas.append((files.group(1).split(), name))
    if stanzas:
        counted = []
        for pats, lic in stanzas:
            if all(x.startswith("debian/") for x in pats):
                continue
            if "*" in pats or any(_doc_pattern(x) for x in pats):
                counted.append(lic)
        if not counted:
            counted = [lic for pats, lic in stanzas if not all(x.startswith("debian/") for x in pats)]
        uniq = list(dict.fromkeys(counted))
        return "; ".join(uniq)[:200], bool(uniq) and all(licence_accepted(x) for x in uniq), "DEP-5"
    found = [name for name, pat in _PERMISSIVE_TEXT if pat.search(copyright_text)]
    copyleft = _COPYLEFT_TEXT.search(copyright_text)
    if copyleft:
        return (f"names {copyleft.group(0)}" + (f" (and {', '.join(found)})" if found else ""))[:200], False, \
            "free-form text"
    return ("; ".join(found) or "unknown"), bool(found), "free-form text"


# ---------------------------------------------------------------------------------------
# packages and their files


@dataclass
class Package:
    name: str
    version: str
    licence: str
    accepted: bool
    decided: str  # how the licence was decided
    files: list[Path]

    def record(self) -> dict:
        return {"package": self.name, "version": self.version, "licence": self.licence,
                "accepted": self.accepted, "decided": self.decided, "files": len(self.files)}


def installed_versions(status: Path = DPKG_STATUS) -> dict[str, str]:
    out = {}
    if status.is_file():
        for block in status.read_text(errors="replace").split("\n\n"):
            name = re.search(r"^Package: (.+)$", block, re.M)
            ver = re.search(r"^Version: (.+)$", block, re.M)
            if name and ver and re.search(r"^Status: .* installed$", block, re.M):
                out[name.group(1).strip()] = ver.group(1).strip()
    return out


def _dpkg_list(pkg: str, dpkg_info: Path | None) -> Path | None:
    if dpkg_info is None:
        return None
    for cand in [dpkg_info / f"{pkg}.list", *sorted(dpkg_info.glob(f"{pkg}:*.list"))]:
        if cand.is_file():
            return cand
    return None


def package_files(pkg: str, doc_root: Path, info_root: Path | None, man_root: Path | None,
                  dpkg_info: Path | None) -> list[tuple[Path, str]]:
    """(file, reader kind) for every readable documentation file of the package, sorted."""
    lst = _dpkg_list(pkg, dpkg_info)
    if lst is not None:
        roots = [r for r in (doc_root, info_root, man_root) if r is not None]
        cands = [Path(x) for x in lst.read_text(errors="replace").splitlines() if x.strip()]
        cands = [p for p in cands if any(r in p.parents for r in roots)]
    else:
        d = doc_root / pkg
        cands = list(d.rglob("*")) if d.is_dir() and not d.is_symlink() else []
    out = []
    for p in sorted(set(cands)):
        if any(part.startswith(("_sources", "_static", "_images", "_downloads", ".doctrees")) for part in p.parts):
            continue
        kind = kind_of(p, man_root)
        if kind and p.is_file() and not p.is_symlink():
            out.append((p, kind))
    return out


def packages(doc_root: Path = DOC_ROOT, info_root: Path | None = INFO_ROOT, man_root: Path | None = MAN_ROOT,
             dpkg_info: Path | None = DPKG_INFO, status: Path | None = DPKG_STATUS,
             only: list[str] | None = None) -> list[Package]:
    """Every package with a folder in doc_root (or only these), its licence decision and the
    files a reader takes; sorted by name."""
    versions = installed_versions(status) if status is not None else {}
    if only is not None:
        names = sorted(only)
    else:  # a folder that is a link to another package's (zsh-doc -> zsh-common) counts where dpkg lists it
        names = sorted(p.name for p in doc_root.iterdir() if p.is_dir() and (
            not p.is_symlink() or _dpkg_list(p.name, dpkg_info) is not None)) if doc_root.is_dir() else []
    out = []
    for name in names:
        cp = doc_root / name / "copyright"
        if name in REVIEWED:
            licence, why = REVIEWED[name]
            accepted, decided = True, f"reviewed: {why}"
        elif cp.is_file():
            licence, accepted, decided = package_licence(cp.read_text(errors="replace"))
        else:
            licence, accepted, decided = "no copyright file", False, "none"
        files = [f for f, _ in package_files(name, doc_root, info_root, man_root, dpkg_info)]
        out.append(Package(name, versions.get(name, "installed"), licence, accepted, decided, files))
    return out


# ---------------------------------------------------------------------------------------
# reading


def read_package(args) -> Source:
    """One package's documents (a document per file), up to max_chars; for a process pool."""
    pkg, doc_root, info_root, man_root, dpkg_info, max_chars, max_file_bytes = args
    src = Source("debian", pkg.name, pkg.version, pkg.licence)
    total = 0
    for path, kind in package_files(pkg.name, doc_root, info_root, man_root, dpkg_info):
        if total >= max_chars:
            break
        try:
            if path.stat().st_size > max_file_bytes:
                continue
            text = read_text(path)
            own = file_licence(text[:4000])
            if (own is None and pkg.licence == PER_FILE) or (own is not None and not licence_accepted(own)):
                src.skipped += 1  # a file that names a licence not on the allow-list
                continue
            paras = READERS[kind](text)
        except (OSError, EOFError, ValueError):
            continue
        if paras:
            doc = "\n".join(paras)
            src.docs.append(doc)
            src.files += 1
            total += len(doc)
    return src


def debian_sources(doc_root: Path = DOC_ROOT, info_root: Path | None = INFO_ROOT, man_root: Path | None = MAN_ROOT,
                   dpkg_info: Path | None = DPKG_INFO, status: Path | None = DPKG_STATUS,
                   only: list[str] | None = None, max_chars_per_package: int = 40_000_000,
                   max_file_bytes: int = 8_000_000, workers: int = 1, log=print) -> tuple[list[Source], list[dict]]:
    """(sources of the accepted packages, a record of every package considered)."""
    pkgs = packages(doc_root, info_root, man_root, dpkg_info, status, only)
    records = [p.record() for p in pkgs]
    todo = [(p, doc_root, info_root, man_root, dpkg_info, max_chars_per_package, max_file_bytes)
            for p in pkgs if p.accepted and p.files]
    log(f"corpus: {len(todo)} of {len(pkgs)} Debian packages accepted, reading "
        f"{sum(len(t[0].files) for t in todo)} files")
    if workers > 1 and len(todo) > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            sources = list(pool.imap(read_package, todo))
    else:
        sources = [read_package(t) for t in todo]
    return [s for s in sources if s.docs], records
