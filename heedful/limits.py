"""Documented limits on what a person or a script may ask for, checked before anything runs
(docs/DESIGN.md, "Limits"). They keep bad input from hanging the process or growing memory
without bound; each is far above what a real session needs."""

from __future__ import annotations

import math

MAX_PROMPT_CHARS = 1_000_000  # one prompt (a long document is several prompts)
MAX_GENERATE = 1_000_000  # tokens one generate asks for (a session can go on with more)
MAX_INT = 2**63 - 1  # any integer in a script or setting (a seed: torch.Generator's range)
MAX_SCRIPT_LINE_BYTES = 4 * MAX_PROMPT_CHARS + 1024  # a prompt line, escaped
REGEX_TIMEOUT_S = 2.0  # a regex target that backtracks longer than this is refused


def is_finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_text(what: str, text: str) -> None:
    """Refuses text that cannot be UTF-8 encoded (lone surrogates) or is too long; raises
    ValueError(reason)."""
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"{what}: {len(text):,} characters is over the limit of {MAX_PROMPT_CHARS:,}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what}: invalid Unicode (lone surrogate {text[e.start]!a} at character {e.start})") from None
