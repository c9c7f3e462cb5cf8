"""Corpus builder: licence-clean English text that is on this machine, plus generated text
and synthetic recall episodes.

Sources (each recorded with its licence in ``manifest.json`` next to the corpus):

* ``pypi``: docstrings and README long descriptions of installed Python distributions
  whose metadata declares a permissive licence (MIT, BSD, Apache, PSF, ISC, ...).
* ``debian``: documentation packages under /usr/share/doc (HTML, info manuals, manual pages,
  plain text; gzip'd or not), each read only when the licence in its ``copyright`` file is on
  the allow-list (:mod:`heedful.train.debian`), and the licence texts under
  /usr/share/common-licenses (their own terms permit verbatim copying).
* ``generated``: simple stories written by a seeded generator (CC0).
* ``recall``: synthetic recall episodes: facts stated early, filler, then a query whose
  answer must be copied from the context; ``copy``: copy drills (:mod:`heedful.train.synthetic`).

Everything is deterministic: files are read in sorted order, text is normalised and
deduplicated by paragraph hash, a size cap keeps documents in hash order, and the generators
use a fixed seed. Output: ``train.txt`` / ``valid.txt`` / ``valid_prose.txt`` (the held-out
natural text alone; documents separated by a line holding only ``<|endoftext|>``),
``recall_train.jsonl`` / ``recall_valid.jsonl``, ``copy_train.jsonl`` and ``manifest.json``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
import sys
from pathlib import Path

from heedful.train.debian import debian_sources
# is_prose is read from here too (heedful/bench/tasks)
from heedful.train.paragraphs import Source, is_prose, split_paragraphs  # noqa: F401
from heedful.train.synthetic import copy_drill, recall_episode, story

DOC_SEP = "<|endoftext|>"
PERMISSIVE = ("mit", "bsd", "apache", "psf", "python software foundation", "isc", "zlib",
              "cc0", "unlicense", "0bsd", "mpl-2.0", "mozilla public license 2.0", "hpnd")

def _licence_from_metadata(meta: str) -> str:
    for key in ("License-Expression:", "License:"):
        for line in meta.splitlines():
            if line.startswith(key) and line[len(key):].strip():
                return line[len(key):].strip()[:120]
        # stop at the body
    cls = [line.split("::")[-1].strip() for line in meta.splitlines() if line.startswith("Classifier: License ::")]
    return "; ".join(cls) or "unknown"


def is_permissive(licence: str) -> bool:
    low = licence.lower()
    return any(k in low for k in PERMISSIVE) and "gpl" not in low.replace("lgpl", "gpl")


def _metadata_body(meta: str) -> str:
    head, sep, body = meta.partition("\n\n")
    return body if sep else ""


def pypi_sources(site_packages: Path, max_chars_per_package: int = 2_000_000) -> list[Source]:
    sources = []
    for info in sorted(site_packages.glob("*.dist-info")):
        meta_path = info / "METADATA"
        if not meta_path.is_file():
            continue
        meta = meta_path.read_text(errors="replace")
        name = re.search(r"^Name: (.+)$", meta, re.M)
        version = re.search(r"^Version: (.+)$", meta, re.M)
        if not name:
            continue
        name_s = name.group(1).strip()
        if name_s.lower() == "heedful":
            continue
        licence = _licence_from_metadata(meta)
        if not is_permissive(licence):
            continue
        src = Source("pypi", name_s, version.group(1).strip() if version else "?", licence)
        paras = split_paragraphs(_metadata_body(meta))
        if paras:
            src.docs.append("\n".join(paras))
            src.files += 1
        # the package's own modules, from RECORD (sorted for determinism)
        record = info / "RECORD"
        files = []
        if record.is_file():
            for line in record.read_text(errors="replace").splitlines():
                rel = line.split(",")[0]
                if rel.endswith(".py") and "/tests/" not in rel and "/test_" not in rel and not rel.startswith(".."):
                    files.append(site_packages / rel)
        total = sum(len(d) for d in src.docs)
        for f in sorted(set(files)):
            if total >= max_chars_per_package:
                break
            try:
                tree = ast.parse(f.read_text(errors="replace"))
            except (SyntaxError, ValueError, OSError):
                continue
            paras = []
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node, clean=True)
                    if doc:
                        paras.extend(split_paragraphs(doc))
            if paras:
                text = "\n".join(paras)
                src.docs.append(text)
                src.files += 1
                total += len(text)
        if src.docs:
            sources.append(src)
    return sources


def licence_texts(licences_root: Path = Path("/usr/share/common-licenses")) -> list[Source]:
    """The licence texts themselves (their own terms permit verbatim copying)."""
    src = Source("debian", "common-licenses", "installed", "verbatim copying permitted (licence texts)")
    if licences_root.is_dir():
        for f in sorted(licences_root.iterdir()):
            if f.is_file() and not f.is_symlink():
                paras = split_paragraphs(f.read_text(errors="replace"))
                if paras:
                    src.docs.append("\n".join(paras))
                    src.files += 1
    return [src] if src.docs else []


def write_copy_drills(out_dir: str | Path, n: int = 20000, seed: int = 0) -> Path:
    """copy_train.jsonl (deterministic); adds the source to manifest.json if it is there."""
    out = Path(out_dir)
    path = out / "copy_train.jsonl"
    rng = random.Random(seed + 3)
    with open(path, "w") as fh:
        for _ in range(n):
            fh.write(json.dumps({"text": copy_drill(rng)}) + "\n")
    mpath = out / "manifest.json"
    if mpath.is_file():
        m = json.loads(mpath.read_text())
        m["sources"] = [x for x in m["sources"] if x["kind"] != "copy"] + [
            Source("copy", "heedful.train.synthetic.copy_drill", "1", "CC0-1.0 (generated by this script)",
                   paragraphs=n).record()]
        m["copy_drills"] = n
        mpath.write_text(json.dumps(m, indent=1) + "\n")
    return path


# ---------------------------------------------------------------------------------------
# build


def _dedup_docs(docs: list[str], seen: set[bytes]) -> tuple[list[str], int]:
    """Drops paragraphs seen before (normalised hash); returns the docs and kept paragraphs."""
    out, kept = [], 0
    for d in docs:
        paras = []
        for p in d.split("\n"):
            h = hashlib.sha1(" ".join(p.lower().split()).encode()).digest()[:12]
            if h in seen:
                continue
            seen.add(h)
            paras.append(p)
        if paras:
            out.append("\n".join(paras))
            kept += len(paras)
    return out, kept


def _auto(value, system: str, doc_root) -> Path | None:
    """'auto': the system's folder when reading the system's /usr/share/doc, else none."""
    if value == "auto":
        return Path(system) if doc_root is not None and Path(doc_root) == Path("/usr/share/doc") else None
    return Path(value) if value else None


def _cap(sources: list[Source], max_chars: int | None) -> None:
    """Keeps documents in the order of their hash until max_chars: a uniform sample of every
    source that does not depend on the order the sources were read in."""
    total = sum(len(d) for s in sources for d in s.docs)
    if max_chars is None or total <= max_chars:
        return
    order = sorted((hashlib.sha1(d.encode()).digest(), i, j) for i, s in enumerate(sources) for j, d in enumerate(s.docs))
    keep, n = set(), 0
    for _, i, j in order:
        n += len(sources[i].docs[j])
        if n > max_chars:
            break
        keep.add((i, j))
    for i, s in enumerate(sources):
        s.docs = [d for j, d in enumerate(s.docs) if (i, j) in keep]
        s.paragraphs = sum(d.count("\n") + 1 for d in s.docs)
        s.chars = sum(len(d) for d in s.docs)


def build_corpus(out_dir: str | Path, *, seed: int = 0, site_packages: str | Path | None = None,
                 doc_root: str | Path | None = "/usr/share/doc",
                 licences_root: str | Path | None = "/usr/share/common-licenses",
                 debian_packages: list[str] | None = None, info_root="auto", man_root="auto",
                 dpkg_info="auto", dpkg_status="auto", workers: int = 1,
                 n_stories: int = 20000, n_recall: int = 20000, valid_fraction: float = 0.02,
                 max_chars_per_package: int = 2_000_000, max_debian_chars_per_package: int = 40_000_000,
                 max_natural_chars: int | None = 40_000_000, log=print) -> dict:
    """Builds the corpus into ``out_dir``; returns the manifest (also written as manifest.json).

    debian_packages: read only these packages of doc_root (None: every package there whose
    licence is accepted). max_natural_chars caps the text of PyPI and Debian sources after
    deduplication (a uniform sample by document hash); the generated text is not capped."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources: list[Source] = []
    package_records: list[dict] = []
    if site_packages is None:
        site_packages = next((Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()), None)
    if site_packages:
        log(f"corpus: scanning Python distributions in {site_packages}")
        sources += pypi_sources(Path(site_packages), max_chars_per_package)
    if doc_root:
        log(f"corpus: scanning Debian documentation in {doc_root}")
        deb, package_records = debian_sources(
            Path(doc_root), _auto(info_root, "/usr/share/info", doc_root), _auto(man_root, "/usr/share/man", doc_root),
            _auto(dpkg_info, "/var/lib/dpkg/info", doc_root), _auto(dpkg_status, "/var/lib/dpkg/status", doc_root),
            only=debian_packages, max_chars_per_package=max_debian_chars_per_package, workers=workers, log=log)
        sources += deb
    if licences_root:
        sources += licence_texts(Path(licences_root))
    seen: set[bytes] = set()
    for src in sources:
        src.docs, src.paragraphs = _dedup_docs(src.docs, seen)
        src.chars = sum(len(d) for d in src.docs)
    _cap(sources, max_natural_chars)
    sources = [s for s in sources if s.docs]
    natural = [d for s in sources for d in s.docs]
    rng = random.Random(seed)
    gen = Source("generated", "heedful.train.corpus.story", "1", "CC0-1.0 (generated by this script)")
    stories = [story(rng) for _ in range(n_stories)]
    stories, gen.paragraphs = _dedup_docs(stories, seen)
    gen.chars = sum(len(s) for s in stories)
    gen.files = 0
    # split by document hash, so the split does not depend on order; valid_prose.txt is the
    # held-out natural text alone (bits per character on plain English prose)
    train_docs, valid_docs, valid_prose = [], [], []
    for i, d in enumerate(natural + stories):
        h = int(hashlib.sha1(d.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        if h < valid_fraction:
            valid_docs.append(d)
            if i < len(natural):
                valid_prose.append(d)
        else:
            train_docs.append(d)
    rng.shuffle(train_docs)
    sep = "\n" + DOC_SEP + "\n"
    (out / "train.txt").write_text(sep.join(train_docs) + "\n")
    (out / "valid.txt").write_text(sep.join(valid_docs) + "\n")
    (out / "valid_prose.txt").write_text(sep.join(valid_prose) + "\n")
    rec = Source("recall", "heedful.train.synthetic.recall_episode", "1", "CC0-1.0 (generated by this script)")
    rrng = random.Random(seed + 1)
    vrng = random.Random(seed + 2)
    n_valid = max(1, n_recall // 50)
    with open(out / "recall_train.jsonl", "w") as fh:
        for _ in range(n_recall):
            fh.write(json.dumps(recall_episode(rrng).to_dict()) + "\n")
    with open(out / "recall_valid.jsonl", "w") as fh:
        for _ in range(n_valid):
            fh.write(json.dumps(recall_episode(vrng).to_dict()) + "\n")
    rec.paragraphs = n_recall
    manifest = {
        "seed": seed,
        "documents": {"train": len(train_docs), "valid": len(valid_docs), "valid_prose": len(valid_prose)},
        "chars": {"train": sum(map(len, train_docs)), "valid": sum(map(len, valid_docs)),
                  "valid_prose": sum(map(len, valid_prose))},
        "max_natural_chars": max_natural_chars,
        "recall_episodes": {"train": n_recall, "valid": n_valid},
        "dedup": "exact paragraph hash (lower-cased, whitespace-normalised), first occurrence kept",
        "licence_policy": "PyPI: permissive licences only (" + ", ".join(PERMISSIVE) + "); Debian: a package "
                          "is read only when the licence of its documentation (its copyright file) is on the "
                          "allow-list (heedful.train.debian.ACCEPTED; copyleft licences refused); licence texts "
                          "(verbatim copying permitted)",
        "sources": [s.record() for s in sources] + [gen.record(), rec.record()],
        "debian_packages": package_records,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    write_copy_drills(out, n_recall, seed)
    manifest = json.loads((out / "manifest.json").read_text())
    log(f"corpus: {len(train_docs)} train docs ({manifest['chars']['train'] / 1e6:.1f}M chars), "
        f"{len(valid_docs)} valid docs, {n_recall} recall episodes, {len(sources)} sources")
    return manifest


def read_docs(path: str | Path) -> list[str]:
    text = Path(path).read_text()
    return [d.strip() for d in text.split("\n" + DOC_SEP + "\n") if d.strip()]


def read_episodes(path: str | Path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]
