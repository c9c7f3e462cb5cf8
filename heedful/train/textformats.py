"""Readers that turn documentation files into paragraphs of English prose: HTML (tags
stripped with the standard library's html.parser), GNU info, manual pages (roff), and
plain text, each possibly gzip'd. Everything here is pure and deterministic; the caller
(:mod:`heedful.train.debian`) decides which files to read.
"""

from __future__ import annotations

import gzip
import re
from html.parser import HTMLParser
from pathlib import Path

from heedful.train.paragraphs import clean_paragraph, is_prose, raw_paragraphs, split_paragraphs

# ---------------------------------------------------------------------------------------
# English, not another language: share of common function words


_FUNCTION_WORDS = frozenset(
    "the of and to a in is that for it as with be on not this are by or an from can which if "
    "you at will has have its was were but all when there their more one also use used may "
    "each other these than into only should must any such how what so no been would does "
    "do they we your it's then them where while some same most new about".split())


def is_english(p: str, threshold: float = 0.2) -> bool:
    """Roughly a fifth of the words of English prose are these function words; French,
    German or Japanese paragraphs (apache2-doc ships them side by side) score near zero."""
    words = re.findall(r"[a-z']+", p.lower())
    return bool(words) and sum(w in _FUNCTION_WORDS for w in words) / len(words) >= threshold


def keep(paragraphs) -> list[str]:
    out = []
    for p in paragraphs:
        c = clean_paragraph(p.replace("\u00b6", " "))
        if is_prose(c) and is_english(c):
            out.append(c)
    return out


# ---------------------------------------------------------------------------------------
# HTML


_BLOCK = frozenset("p div li dd dt h1 h2 h3 h4 h5 h6 tr td th table ul ol dl section article blockquote br hr "
                   "title caption figcaption figure main aside body html details summary center".split())
_SKIP = frozenset("script style pre head nav header footer noscript svg math button select textarea "
                  "template iframe object".split())


class _HTMLText(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._buf: list[str] = []
        self._skip = 0

    def _flush(self):
        if self._buf:
            self.paragraphs.append("".join(self._buf))
            self._buf = []

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP:
            self._skip += 1
        elif tag in _BLOCK:
            self._flush()

    def handle_startendtag(self, tag, attrs):
        if tag in _BLOCK:
            self._flush()

    def handle_endtag(self, tag):
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK:
            self._flush()

    def handle_data(self, data):
        if not self._skip:
            self._buf.append(data)

    def close(self):
        super().close()
        self._flush()


def html_paragraphs(text: str) -> list[str]:
    """Paragraphs of an HTML page: the text of each block element (p, li, dd, td, headings,
    ...); code blocks (pre), scripts, styles, the head and navigation are left out."""
    parser = _HTMLText()
    try:
        parser.feed(text)
        parser.close()
    except (AssertionError, ValueError):  # html.parser gives up on some malformed markup
        pass
    return keep(parser.paragraphs)


# ---------------------------------------------------------------------------------------
# GNU info


_INFO_NOTE = re.compile(r"\*[Nn]ote\s+([^:]+?)::?")
_INFO_SKIP = ("Tag Table:", "End Tag Table", "Indirect:", "Local Variables:")


def info_paragraphs(text: str) -> list[str]:
    """Paragraphs of an info file: nodes are separated by ^_ (0x1f); each node's first line
    (File: ..., Node: ...), menus and the tag tables are left out."""
    out = []
    for node in text.split("\x1f"):
        node = node.lstrip("\n")
        if not node or node.startswith(_INFO_SKIP):
            continue
        lines = node.split("\n")
        if lines[0].startswith("File:"):
            lines = lines[1:]
        kept = [ln for ln in lines if not ln.startswith("* ")]
        body = _INFO_NOTE.sub(r"see \1", "\n".join(kept))
        out.extend(raw_paragraphs(body))
    return keep(out)


# ---------------------------------------------------------------------------------------
# manual pages (roff: man and mdoc macros)


_ROFF_CHARS = {"em": "\u2014", "en": "\u2013", "aq": "'", "lq": '"', "rq": '"', "dq": '"', "oq": "'", "cq": "'",
               "hy": "-", "bu": "", "co": "(c)", "rg": "(R)", "tm": "(TM)", "mu": "x", "<=": "<=", ">=": ">="}
_ROFF_ESC = re.compile(r"\\(\((..)|\[([^\]]*)\]|f\(..|f\[[^\]]*\]|f.|\*\(..|\*\[[^\]]*\]|\*.|s[+-]?\d+|"
                       r"n\(..|n.|[-e&%|^ c0'`~]|.)")
_BREAK = frozenset("SH SS PP P LP TP TQ IP HP sp br nf fi TH RS RE in ti ce bp EX EE Sh Ss Pp Bl El It Bd Ed "
                   "Dd Dt Os D1 Dl".split())
_INLINE = frozenset("B I BR IR RB RI BI IB SM SB Em Sy Ar Nm Fl Cm Pa Va Dv Ev Xr Li Ql Dq Sq Pq".split())
_HEADING = frozenset("SH SS Sh Ss TH Dt".split())
_ALTERNATING = frozenset("BR IR RB RI BI IB".split())


def _roff_unescape(s: str) -> str:
    def sub(m):
        name = m.group(2) or m.group(3)
        if name is not None:
            return _ROFF_CHARS.get(name, "")
        tok = m.group(1)
        return {"-": "-", "e": "\\", " ": " ", "0": " ", "~": " ", "'": "'", "`": "`"}.get(tok, "")
    return _ROFF_ESC.sub(sub, s)


def _roff_args(rest: str) -> list[str]:
    return [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', rest)]


def man_paragraphs(text: str) -> list[str]:
    """Paragraphs of a manual page: text lines with roff escapes resolved; paragraph macros
    break paragraphs; the words of font macros (.B, .I, .BR ...) are kept; headings, tags of
    .TP/.IP lists, and no-fill blocks (.nf / .EX: examples) are left out."""
    paras, buf = [], []
    nofill = skip_next = False

    def flush():
        if buf:
            paras.append(" ".join(buf))
            buf.clear()

    for line in text.splitlines():
        if line.startswith((".", "'")):
            name, _, rest = line[1:].strip().partition(" ")
            if skip_next and name in _INLINE:  # the tag of a .TP item, set in a font
                skip_next = False
                continue
            if name in ("nf", "EX", "Bd"):
                flush()
                nofill = True
            elif name in ("fi", "EE", "Ed"):
                nofill = False
            elif name in _BREAK:
                flush()
                skip_next = name in ("TP", "TQ")
            elif name in _INLINE and rest and not nofill:
                args = [_roff_unescape(a) for a in _roff_args(rest)]
                buf.append(("" if name in _ALTERNATING else " ").join(args))
            if name in _HEADING:
                buf.clear()
            continue
        if nofill:
            continue
        if skip_next:
            skip_next = False
            continue
        if not line.strip():
            flush()
            continue
        buf.append(_roff_unescape(line).strip())
    flush()
    return keep(paras)


# ---------------------------------------------------------------------------------------
# plain text and dispatch


def text_paragraphs(text: str) -> list[str]:
    return [p for p in split_paragraphs(text) if is_english(p)]


def read_text(path: Path) -> str:
    if path.suffix in (".gz", ".dz"):  # dictd's .dz is gzip with an index in the header
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    else:
        data = path.read_bytes()
    return data.decode("utf-8", errors="replace")


def _base_name(path: Path) -> str:
    """The name without .gz, and without a language suffix after .html (index.html.en)."""
    name = path.name.lower()
    if name.endswith((".gz", ".dz")):
        name = name[:-3]
    return re.sub(r"(\.html?)\.en$", r"\1", name)


_TEXT_NAME = re.compile(r"(readme|\.txt$|\.text$|\.md$|faq|\.rst$|intro|guide|howto|tutorial)")
_MAN_NAME = re.compile(r"\.[1-9][a-z0-9]*$")


def kind_of(path: Path, man_root: Path | None = None) -> str | None:
    """html | info | man | text, or None for a file no reader takes."""
    name = _base_name(path)
    if "changelog" in name or name in ("copyright", "news", "news.debian"):
        return None
    if name.endswith((".html", ".htm", ".xhtml")):
        return "html"
    if re.search(r"\.info(-\d+)?$", name):
        return "info"
    if man_root is not None and path.parent.parent == man_root and path.parent.name.startswith("man") \
            and _MAN_NAME.search(name):
        return "man"
    if _TEXT_NAME.search(name) and not name.endswith((".js", ".css", ".py", ".json", ".svg", ".png")):
        return "text"
    return None


READERS = {"html": html_paragraphs, "info": info_paragraphs, "man": man_paragraphs, "text": text_paragraphs}
