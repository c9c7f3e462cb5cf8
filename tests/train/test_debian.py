"""The Debian documentation reader: licence decisions, the readers (HTML, info, man, text, gzip)
and the corpus built from a folder that imitates /usr/share/doc."""

from __future__ import annotations

import gzip
import json

import pytest

from heedful.train.corpus import build_corpus, read_docs
from heedful.train.debian import licence_accepted, package_licence, packages
from heedful.train.textformats import html_paragraphs, info_paragraphs, is_english, man_paragraphs

TOPICS = ["the parser", "the scheduler", "the index", "the cache", "the socket layer", "the build system",
          "the database", "the shell", "the compiler", "the archive tool", "the mail filter", "the editor"]


def prose(i: int, tag: str) -> str:
    """A distinct English paragraph (every one differs, so deduplication keeps them)."""
    t = TOPICS[i % len(TOPICS)]
    return (f"In chapter {i} of the {tag} manual we explain how {t} reads its configuration file, which options "
            f"it accepts, and what it does when a value is missing or out of range for version {i}.")


DEP5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"


def stanza(files: str, licence: str) -> str:
    return f"Files: {files}\nCopyright: someone\nLicense: {licence}\n\n"


HTML = """<!DOCTYPE html><html><head><title>Ignored title</title><script>var secret = "SCRIPTTEXT";</script>
<style>p {{ color: red }}</style></head><body><nav>NAVTEXT home | next | previous and the rest of the menu</nav>
<h1>Heading&para;</h1><p>{p1}</p><pre>CODETEXT x = 1  # a code block that is never read as prose</pre>
<div><p>{p2} It uses &lt;angle&gt; brackets &amp; entities&nbsp;correctly.</p></div>
<p>Ce paragraphe est écrit en français et ne doit pas entrer dans le corpus anglais du modèle.</p>
<ul><li>{p3}</li></ul></body></html>"""

INFO = ("This is demo.info, produced by makeinfo.\n\n\x1f\nFile: demo.info,  Node: Top,  Next: Usage,  Up: (dir)\n\n"
        "{p1}\n\n* Menu:\n\n* Usage::            MENUTEXT how to use it.\n\n\x1f\n"
        "File: demo.info,  Node: Usage,  Prev: Top,  Up: Top\n\n1 Usage\n*******\n\n{p2} *Note Top::.\n\n"
        "\x1f\nTag Table:\nNode: Top\x7f97\nNode: Usage\x7f300\n\x1f\nEnd Tag Table\n")

MAN = (".\\\" SPDX-License-Identifier: {spdx}\n.TH DEMO 1 2024\n.SH NAME\ndemo \\- HEADINGTEXT\n.SH DESCRIPTION\n"
       ".B demo\n{p1}\n.PP\n{p2} It prints \\fBbold\\fR and \\fIitalic\\fP words\\(emand an em dash.\n"
       ".TP\n.B \\-\\-TAGTEXT\n{p3}\n.nf\nNOFILLTEXT example line one\n.fi\n")


def gz(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        fh.write(text)


def make_docs(root):
    """A folder imitating /usr/share/doc, a dpkg info folder and info/man roots; returns paths."""
    doc, info, man, dpkg = root / "doc", root / "info", root / "man", root / "dpkg"
    for d in (doc, info, man, dpkg):
        d.mkdir(parents=True)
    n = iter(range(1000))

    def page(tag):
        return HTML.format(p1=prose(next(n), tag), p2=prose(next(n), tag), p3=prose(next(n), tag))

    # accepted: DEP-5, BSD for everything but the packaging and the tests (GPL, not counted)
    p = doc / "permdoc"
    (p / "html").mkdir(parents=True)
    (p / "copyright").write_text(DEP5 + stanza("*", "BSD-3-Clause") + stanza("debian/*", "GPL-2+")
                                 + stanza("tests/*", "GPL-3+") + "License: BSD-3-Clause\n text\n")
    for i in range(12):
        (p / "html" / f"page{i:02}.html").write_text(page("permdoc"))
    gz(p / "html" / "zipped.html.gz", page("zipped"))
    gz(p / "README.gz", prose(next(n), "readme") + "\n\n    indented code block ignored\n")
    (p / "manual.info").write_text(INFO.format(p1=prose(next(n), "info"), p2=prose(next(n), "info")))
    (p / "image.png").write_bytes(b"\x89PNG not text")
    (p / "changelog").write_text(prose(next(n), "CHANGELOGTEXT"))
    # accepted: free-form MIT wording; "GPL-1+ or Artistic" (an accepted alternative)
    for name, cp in [("freeform", "Copyright 2001 someone\n\nPermission is hereby granted, free of charge, to any "
                                  "person obtaining a copy of this software...\n"),
                     ("dualperl", DEP5 + stanza("*", "GPL-1+ or Artistic"))]:
        (doc / name).mkdir()
        (doc / name / "copyright").write_text(cp)
        (doc / name / "guide.html").write_text(page(name))
    # refused: GPL; GFDL for the documentation (the MIT of "*" does not save it); free-form naming
    # the GPL; no copyright file at all
    for name, cp in [("gpldoc", DEP5 + stanza("*", "GPL-3+")),
                     ("gfdldoc", DEP5 + stanza("*", "Expat") + stanza("doc/*", "GFDL-1.3+")),
                     ("mixed", "Permission is hereby granted, free of charge... parts are under the GNU General "
                               "Public License version 2.\n"),
                     ("nocopy", None)]:
        (doc / name).mkdir()
        if cp:
            (doc / name / "copyright").write_text(cp)
        (doc / name / "index.html").write_text(page("REFUSED" + name))
    # accepted, read through dpkg's list: its info manual and man pages live outside doc/
    (doc / "mandoc").mkdir()
    (doc / "mandoc" / "copyright").write_text(DEP5 + stanza("*", "ISC"))
    gz(man / "man1" / "demo.1.gz", MAN.format(spdx="MIT", p1=prose(next(n), "man"), p2=prose(next(n), "man"),
                                              p3=prose(next(n), "man")))
    gz(man / "man1" / "gplpage.1.gz", MAN.format(spdx="GPL-2.0-or-later", p1=prose(next(n), "GPLPAGE"),
                                                 p2=prose(next(n), "GPLPAGE"), p3=prose(next(n), "GPLPAGE")))
    gz(man / "de" / "man1" / "demo.1.gz", MAN.format(spdx="MIT", p1=prose(next(n), "GERMANDIR"), p2="x", p3="y"))
    gz(info / "demo.info.gz", INFO.format(p1=prose(next(n), "inforoot"), p2=prose(next(n), "inforoot")))
    listed = [doc / "mandoc", doc / "mandoc" / "copyright", man / "man1" / "demo.1.gz",
              man / "man1" / "gplpage.1.gz", man / "de" / "man1" / "demo.1.gz", info / "demo.info.gz",
              root / "elsewhere" / "not-a-doc-root.html"]
    (dpkg / "mandoc.list").write_text("".join(f"{x}\n" for x in listed))
    (dpkg.parent / "status").write_text("Package: mandoc\nStatus: install ok installed\nVersion: 1.2-3\n\n")
    return doc, info, man, dpkg


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    return make_docs(tmp_path_factory.mktemp("debian"))


def build(docs, out, **kw):
    doc, info, man, dpkg = docs
    return build_corpus(out, site_packages=False, doc_root=doc, licences_root=None, info_root=info, man_root=man,
                        dpkg_info=dpkg, dpkg_status=dpkg.parent / "status", n_stories=50, n_recall=20,
                        valid_fraction=0.3, log=lambda *_: None, **kw)


def test_licence_expressions():
    for ok in ["MIT", "Expat", "BSD-3-clause", "Apache-2.0", "PSF-2.0", "PostgreSQL", "public-domain", "ISC",
               "GPL-1+ or Artistic", "BSD-3-clause or GPL-2", "MIT and BSD-2-Clause", "Zlib", "CC0-1.0",
               "Apache-2.0 with LLVM exception", "Linux-man-pages-copyleft", "CC-BY-4.0"]:
        assert licence_accepted(ok), ok
    for bad in ["GPL-2+", "LGPL-2.1+", "GFDL-1.3", "GFDL-NIV-1.3+", "CC-BY-SA-3.0", "AGPL-3", "MIT and GPL-2",
                "unknown", "other", "", "Custom-regex", "Apache-2.0 and GFDL-1.2"]:
        assert not licence_accepted(bad), bad


def test_package_licence_reads_the_documentation_paragraphs():
    lic, ok, how = package_licence(DEP5 + stanza("*", "BSD-3-clause") + stanza("debian/*", "GPL-2+")
                                   + stanza("src/backend/regex/*", "Custom-regex"))
    assert ok and lic == "BSD-3-clause" and how == "DEP-5"
    assert not package_licence(DEP5 + stanza("*", "Expat") + stanza("doc/manual/*", "GFDL-1.3+"))[1]
    assert not package_licence(DEP5 + stanza("*", "Expat") + stanza("guide.html", "CC-BY-SA-3.0"))[1]
    # tests, fonts and images are not documentation text
    assert package_licence(DEP5 + stanza("*", "MIT") + stanza("tests/data/html/wiki.html", "CC-BY-SA-3.0")
                           + stanza("src/doc/html/static/fonts/Fira*", "SIL-OPEN-FONT"))[1]
    assert package_licence("Redistribution and use in source and binary forms, with or without ...")[:2] == (
        "BSD", True)
    assert not package_licence("Redistribution and use in source ... see the GNU General Public License")[1]
    assert not package_licence("no licence named here")[1]


def test_readers():
    page = HTML.format(p1=prose(1, "x"), p2=prose(2, "x"), p3=prose(3, "x"))
    paras = html_paragraphs(page)
    assert paras[0] == prose(1, "x") and paras[2] == prose(3, "x")
    assert paras[1].endswith("It uses <angle> brackets & entities correctly.")
    text = "\n".join(paras)
    for hidden in ["SCRIPTTEXT", "NAVTEXT", "CODETEXT", "Ignored title", "français", "color"]:
        assert hidden not in text
    info = info_paragraphs(INFO.format(p1=prose(4, "i"), p2=prose(5, "i")))
    assert info == [prose(4, "i"), prose(5, "i") + " see Top."]
    man = man_paragraphs(MAN.format(spdx="MIT", p1=prose(6, "m"), p2=prose(7, "m"), p3=prose(8, "m")))
    assert man[0] == "demo " + prose(6, "m")
    assert man[1] == prose(7, "m") + " It prints bold and italic words\u2014and an em dash."
    assert man[2] == prose(8, "m")
    assert not any(w in " ".join(man) for w in ("HEADINGTEXT", "TAGTEXT", "NOFILLTEXT", "\\f"))
    assert is_english(prose(9, "x")) and not is_english("Der Parser liest die Datei und gibt eine Meldung aus.")


def test_packages_and_decisions(docs):
    doc, info, man, dpkg = docs
    got = {p.name: p for p in packages(doc, info, man, dpkg, dpkg.parent / "status")}
    assert {n for n, p in got.items() if p.accepted} == {"permdoc", "freeform", "dualperl", "mandoc"}
    assert got["permdoc"].licence == "BSD-3-Clause"
    assert got["mandoc"].version == "1.2-3" and got["permdoc"].version == "installed"
    names = sorted(f.name for f in got["permdoc"].files)
    assert "image.png" not in names and "changelog" not in names and "copyright" not in names
    assert {"zipped.html.gz", "README.gz", "manual.info"} <= set(names)
    # dpkg's list: English man pages and the info root; nothing outside the roots
    assert sorted(str(f.relative_to(f.parents[1])) for f in got["mandoc"].files) == [
        "info/demo.info.gz", "man1/demo.1.gz", "man1/gplpage.1.gz"]


def test_corpus_from_debian_docs(docs, tmp_path):
    m = build(docs, tmp_path / "c")
    srcs = {s["name"]: s for s in m["sources"] if s["kind"] == "debian"}
    assert set(srcs) == {"permdoc", "freeform", "dualperl", "mandoc"}
    assert srcs["mandoc"]["files_skipped_for_licence"] == 1  # the GPL man page
    assert srcs["permdoc"]["files"] == 15  # 12 pages, the gzip'd page, README.gz, the info manual
    records = {r["package"]: r for r in m["debian_packages"]}
    assert not records["gpldoc"]["accepted"] and records["gpldoc"]["licence"] == "GPL-3+"
    assert records["nocopy"]["licence"] == "no copyright file"
    text = "".join((tmp_path / "c" / f).read_text() for f in ("train.txt", "valid.txt"))
    for absent in ["REFUSED", "GPLPAGE", "GERMANDIR", "CHANGELOGTEXT", "indented code", "SCRIPTTEXT", "français"]:
        assert absent not in text, absent
    for present in ["zipped manual", "readme manual", "inforoot manual", "man manual", "info manual"]:
        assert present in text, present
    assert text.count(prose(0, "permdoc")) == 1
    prose_docs = read_docs(tmp_path / "c" / "valid_prose.txt")
    assert prose_docs and m["documents"]["valid_prose"] == len(prose_docs)
    assert not any("went to" in d for d in prose_docs)  # no generated story among the held-out prose
    assert set(prose_docs) <= set(read_docs(tmp_path / "c" / "valid.txt"))
    assert json.loads((tmp_path / "c" / "manifest.json").read_text()) == m


def test_corpus_is_deterministic_and_capped(docs, tmp_path):
    a = build(docs, tmp_path / "a")
    b = build(docs, tmp_path / "b", workers=2)  # a process pool reads the same
    assert a == b
    for f in ("train.txt", "valid.txt", "valid_prose.txt", "recall_train.jsonl", "copy_train.jsonl"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    natural = sum(s["chars"] for s in a["sources"] if s["kind"] == "debian")
    cap = natural // 2
    c = build(docs, tmp_path / "c", max_natural_chars=cap)
    kept = sum(s["chars"] for s in c["sources"] if s["kind"] == "debian")
    assert cap * 0.6 < kept <= cap and c["max_natural_chars"] == cap
    assert build(docs, tmp_path / "d", max_natural_chars=cap) == c


def test_corpus_command_lists_packages(docs, tmp_path):
    from click.testing import CliRunner

    from heedful.cli.train import train as train_cmd

    doc = docs[0]
    r = CliRunner().invoke(train_cmd, ["corpus", "--list", "--doc-root", str(doc)])
    assert r.exit_code == 0, r.output
    lines = {ln.split()[1]: ln.split()[0] for ln in r.stdout.splitlines()}
    assert lines["permdoc"] == "read" and lines["gpldoc"] == "refused" and lines["nocopy"] == "refused"
    r = CliRunner().invoke(train_cmd, ["corpus", "--apt"])
    assert r.stdout.startswith("apt-get install -y --no-install-recommends ") and "python3.11-doc" in r.stdout
    r = CliRunner().invoke(train_cmd, ["corpus", str(tmp_path / "out"), "--doc-root", str(doc), "--stories", "10",
                                       "--recall", "10", "--max-mb", "0.01", "--no-pypi"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["max_natural_chars"] == 10000 and "permdoc" in {s["name"] for s in m["sources"]}
