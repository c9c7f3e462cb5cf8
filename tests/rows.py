"""What tests read of a session's resident rows, by kind (Session.rows, selector/rows.py)."""

from __future__ import annotations

from heedful.selector.rows import RowKind


def keys_of(s, kind: RowKind) -> list:
    return [k for k, kd in s.rows() if kd is kind]


def summary_keys(s) -> list:
    return keys_of(s, RowKind.SUMMARY)


def summaries(s) -> int:
    return len(summary_keys(s))


def gist_keys(s) -> list:
    return keys_of(s, RowKind.GIST)


def only_tokens(s) -> bool:
    return all(kd is RowKind.TOKEN for _, kd in s.rows())
