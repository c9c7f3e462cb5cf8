"""Resolving a target (range, literal text, regex) to token index ranges.

Resolution happens when an operation runs, and the engine logs the ranges, never the text
(docs/DESIGN.md invariant 5), so a replay does not depend on search behaviour.
"""

from __future__ import annotations

import bisect
import re

import regex  # re's syntax, plus a timeout: a backtracking pattern cannot hang a session

from heedful.errors import TargetError
from heedful.limits import REGEX_TIMEOUT_S


def compile_regex(pattern: str, flags: int = 0) -> "regex.Pattern":
    """A regex target, compiled (TargetError on bad syntax)."""
    try:
        return regex.compile(pattern, flags)
    except (regex.error, TypeError, ValueError) as e:
        raise TargetError(f"regex {pattern!r}: {e}") from None


def _regex_spans(pattern, text: str) -> list[tuple[int, int]]:
    try:
        return [(m.start(), m.end()) for m in pattern.finditer(text, timeout=REGEX_TIMEOUT_S) if m.end() > m.start()]
    except TimeoutError:
        raise TargetError(f"regex /{pattern.pattern}/ ran longer than {REGEX_TIMEOUT_S:g} s on the session's "
                          "text (catastrophic backtracking?): refused") from None


def check_range(a, b, n: int) -> tuple[int, int]:
    if not (isinstance(a, int) and isinstance(b, int)) or isinstance(a, bool) or isinstance(b, bool):
        raise TargetError(f"range [{a!r}, {b!r}]: start and end must be integers")
    if a == b:
        raise TargetError(f"range [{a}, {b}] is empty")
    if a > b:
        raise TargetError(f"range [{a}, {b}] is inverted (start > end)")
    if a < 0:
        raise TargetError(f"range [{a}, {b}] starts before token 0")
    if b > n:
        raise TargetError(f"range [{a}, {b}] goes past the end of the stream ({n} tokens)")
    return a, b


def _char_to_tokens(starts: list[int], cs: int, ce: int) -> tuple[int, int]:
    """Tokens overlapping the characters [cs, ce). starts[i] is token i's first character."""
    first = bisect.bisect_right(starts, cs) - 1
    last = bisect.bisect_left(starts, ce)  # first token starting at or after ce
    # skip empty tokens (partial UTF-8 pieces) sitting exactly at cs
    first = max(first, 0)
    return first, max(last, first + 1)


def resolve(target, text: str, starts: list[int], n: int, occurrence=None) -> list[tuple[int, int]]:
    """Returns the token ranges a target designates, in stream order.

    target: (start, end) | str (literal) | re.Pattern | {"range"|"text"|"regex": ...}.
    occurrence applies to literal text: None = the last one, an int = that one (0-based,
    negative from the end), "all" = every one.
    """
    if isinstance(target, dict):
        keys = [k for k in ("range", "text", "regex") if k in target]
        if len(keys) != 1:
            raise TargetError("a target needs exactly one of 'range', 'text', 'regex'")
        occurrence = target.get("occurrence", occurrence)
        if keys[0] == "range":
            r = target["range"]
            if not (isinstance(r, (list, tuple)) and len(r) == 2):
                raise TargetError(f"range {r!r}: expected [start, end]")
            return [check_range(r[0], r[1], n)]
        if keys[0] == "regex":
            target = compile_regex(target["regex"])
        else:
            target = target["text"]
    if isinstance(target, (tuple, list)):
        if len(target) != 2:
            raise TargetError(f"range {target!r}: expected (start, end)")
        return [check_range(target[0], target[1], n)]
    if isinstance(target, range):
        return [check_range(target.start, target.stop, n)]
    if isinstance(target, re.Pattern):  # a Python user's pattern: same syntax, run with the timeout
        target = compile_regex(target.pattern, target.flags & ~re.UNICODE)
    if isinstance(target, regex.Pattern):
        spans = _regex_spans(target, text)
        if not spans:
            raise TargetError(f"regex /{target.pattern}/ matches nothing in the session")
        return _merge([_char_to_tokens(starts, a, b) for a, b in spans])
    if isinstance(target, str):
        if not target:
            raise TargetError("empty text target")
        spans, at = [], text.find(target)
        while at != -1:
            spans.append((at, at + len(target)))
            at = text.find(target, at + 1)
        if not spans:
            raise TargetError(f"text {target!r} not found in the session")
        if occurrence is None:
            spans = spans[-1:]
        elif occurrence != "all":
            if not isinstance(occurrence, int) or isinstance(occurrence, bool):
                raise TargetError(f"occurrence {occurrence!r}: expected an integer or 'all'")
            if not -len(spans) <= occurrence < len(spans):
                raise TargetError(f"text {target!r} occurs {len(spans)} time(s); occurrence {occurrence} does not exist")
            spans = [spans[occurrence]]
        return _merge([_char_to_tokens(starts, a, b) for a, b in spans])
    raise TargetError(f"target {target!r}: expected a range, text or regex")


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
