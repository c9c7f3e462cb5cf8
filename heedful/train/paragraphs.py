"""What the corpus's readers share: cleaning a paragraph, telling prose from code and markup,
splitting text into paragraphs, and a corpus source (heedful/train/corpus.py gathers them,
heedful/train/textformats.py and heedful/train/debian.py read Debian's documentation)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------------------
# text cleaning


_RST_ROLE = re.compile(r":[a-zA-Z:]+:`~?([^`<]+?)(?:\s*<[^>]*>)?`")
_BACKTICKS = re.compile(r"`+([^`]+)`+")
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_URL = re.compile(r"https?://\S+")
_WS = re.compile(r"\s+")


def clean_paragraph(p: str) -> str:
    p = _RST_ROLE.sub(r"\1", p)
    p = _MD_LINK.sub(r"\1", p)
    p = _BACKTICKS.sub(r"\1", p)
    p = _URL.sub("", p)
    p = p.replace("**", "").replace("__", "")
    return _WS.sub(" ", p).strip()


def is_prose(p: str) -> bool:
    """A paragraph that reads as English sentences, not code, tables or markup."""
    if len(p) < 60 or len(p) > 4000:
        return False
    if p.startswith((">>>", "...", "#", "|", "+", "-", "=", "*", ".. ", "$", "{", "[", "<")):
        return False
    letters = sum(c.isalpha() or c == " " for c in p)
    if letters / len(p) < 0.85:
        return False
    words = p.split()
    if len(words) < 10:
        return False
    if sum(any(ch in w for ch in "_=(){}[]\\/<>@") for w in words) > len(words) * 0.08:
        return False
    if not re.search(r"[a-z]{3,} [a-z]{2,} [a-z]{2,}", p):
        return False
    return p[-1] in ".!?:)"


def raw_paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, each one line; indented blocks and fenced code
    (```) left out; no filtering."""
    out = []
    in_code = False
    buf: list[str] = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("```"):
            in_code = not in_code
            if buf:
                out.append(" ".join(buf))
                buf = []
            continue
        if in_code:
            continue
        if not s or line.startswith(("    ", "\t")) and not buf:
            if buf:
                out.append(" ".join(buf))
                buf = []
            continue
        buf.append(s)
    if buf:
        out.append(" ".join(buf))
    return out


def split_paragraphs(text: str) -> list[str]:
    """The prose paragraphs of a text, cleaned."""
    return [c for c in (clean_paragraph(p) for p in raw_paragraphs(text)) if is_prose(c)]


# ---------------------------------------------------------------------------------------
# sources


@dataclass
class Source:
    kind: str  # pypi | debian | generated | recall
    name: str
    version: str
    licence: str
    files: int = 0
    paragraphs: int = 0
    chars: int = 0
    skipped: int = 0  # files left out because they name a licence not on the allow-list
    docs: list[str] = field(default_factory=list, repr=False)

    def record(self) -> dict:
        r = {"kind": self.kind, "name": self.name, "version": self.version, "licence": self.licence,
             "files": self.files, "paragraphs": self.paragraphs, "chars": self.chars}
        if self.skipped:
            r["files_skipped_for_licence"] = self.skipped
        return r
