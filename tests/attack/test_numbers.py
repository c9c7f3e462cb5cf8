"""Numbers and strings: out-of-range, non-finite, huge and malformed numbers; text that is
not valid Unicode (bytes that are not UTF-8 reach Python as lone surrogates) in every
option that takes text. Each is one line, exit 2, and changes nothing."""

from __future__ import annotations

import pytest

from tests.attack.harness import Case

M = ["--model", "{model}"]
GEN = ["generate", "The vault code is 4821.", "-n", "2", *M, "--db", "{db}"]
HUGE = "9" * 5000
BAD = "t\udcff"  # the byte 0xff on a command line

NUMBERS = [
    ("n-negative", ["-n", "-1"], r"-n"),
    ("n-over-limit", ["-n", "1000001"], r"-n"),
    ("n-5000-digits", ["-n", HUGE], r"-n"),
    ("n-text", ["-n", "many"], r"-n"),
    ("n-float", ["-n", "1.5"], r"-n"),
    ("window-zero", ["--window", "0"], r"--window"),
    ("window-negative", ["--window", "-3"], r"--window"),
    ("window-5000-digits", ["--window", HUGE], r"--window"),
    ("budget-zero", ["--budget", "0"], r"--budget"),
    ("budget-float", ["--budget", "1e3"], r"--budget"),
    ("budget-below-window", ["--window", "16", "--budget", "8"], r"--budget 8"),
    ("sinks-negative", ["--sinks", "-1"], r"--sinks"),
    ("temperature-nan", ["--temperature", "nan"], r"--temperature"),
    ("temperature-inf", ["--temperature", "inf"], r"--temperature"),
    ("temperature-negative", ["--temperature", "-1"], r"--temperature"),
    ("temperature-tiny", ["--temperature", "1e-300"], r"temperature"),
    ("temperature-overflow", ["--temperature", "1e400"], r"--temperature"),
    ("top-p-nan", ["--top-p", "nan"], r"--top-p"),
    ("top-p-over-one", ["--top-p", "2"], r"--top-p"),
    ("top-p-zero", ["--top-p", "0"], r"--top-p"),
    ("top-k-negative", ["--top-k", "-1"], r"--top-k"),
    ("min-p-one", ["--min-p", "1"], r"--min-p"),
    ("repetition-penalty-zero", ["--repetition-penalty", "0"], r"--repetition-penalty"),
    ("repetition-penalty-huge", ["--repetition-penalty", "1e9"], r"--repetition-penalty"),
    ("seed-negative", ["--seed", "-1"], r"--seed"),
    ("seed-2-63", ["--seed", str(2**63)], r"--seed"),
    ("auto-topk-negative", ["--auto-topk", "-2"], r"--auto-topk"),
    ("fold-block-zero", ["--fold-budget", "4", "--fold-block", "0"], r"--fold-block"),
    ("fold-budget-over-budget", ["--fold-budget", "500"], r"--fold-budget 500"),
    ("session-text", ["--session", "one"], r"--session"),
    ("session-5000-digits", ["--session", HUGE], r"--session"),
    ("session-negative", ["--session", "-1"], r"--session -1"),
]
STRINGS = [
    ("title-not-utf8", ["generate", "hi", "-n", "1", *M, "--db", "{tmp}/new.db", "--title", BAD],
     r"--title: not valid UTF-8"),
    ("db-not-utf8", ["generate", "hi", "-n", "1", *M, "--db", "{tmp}/" + BAD + ".db"], r"not valid UTF-8"),
    ("search-not-utf8", ["sessions", "--db", "{db}", "--search", BAD], r"--search: not valid UTF-8"),
    ("prompt-lone-surrogate", ["generate", "a\ud800b", "-n", "1", *M, "--db", "{db}"], r"surrogate|Unicode|UTF-8"),
    ("pin-not-utf8", [*GEN, "--pin", BAD], r"UTF-8|not found|surrogate"),
    ("recall-not-utf8", ["recall", BAD, "--db", "{db}", *M], r"UTF-8|not found|surrogate"),
    ("sessions-db-not-utf8", ["sessions", "--db", "{tmp}/" + BAD], r"not valid UTF-8"),
    ("export-db-not-utf8", ["export", "--db", "{tmp}/" + BAD], r"not valid UTF-8"),
    ("prompt-empty-file", ["generate", "--file", "{tmp}/empty.txt", *M], r"--file .*empty"),
    ("prompt-file-not-utf8", ["generate", "--file", "{tmp}/bin.txt", *M], r"not UTF-8"),
    ("export-session-30-digits", ["export", "--db", "{db}", "--session", "9" * 30], r"--session 9+: no such session"),
    ("search-session-30-digits", ["sessions", "--db", "{db}", "--search", "vault", "--session", "9" * 30],
     r"--session 9+: no such session"),
    ("recall-session-30-digits", ["recall", "vault", "--db", "{db}", "--session", "9" * 30, *M],
     r"--session 9+: no such session"),
    ("resume-session-30-digits", ["generate", "--db", "{db}", "--session", "9" * 30, *M],
     r"--session 9+: no such session"),
    ("recall-range-negative", ["recall", "--range", "-1", "3", "--db", "{db}", *M], r"--range"),
    ("recall-range-5000-digits", ["recall", "--range", "1", HUGE, "--db", "{db}", *M], r"--range"),
    ("sessions-limit-zero", ["sessions", "--db", "{db}", "--search", "vault", "--limit", "0"], r"--limit"),
    ("export-session-zero", ["export", "--db", "{db}", "--session", "0"], r"--session 0"),
    ("export-what-bogus", ["export", "--db", "{db}", "--what", "bogus"], r"--what"),
]


def _files(tmp, paths):
    open(f"{tmp}/empty.txt", "w").close()
    open(f"{tmp}/bin.txt", "wb").write(b"\xff\xfe\x00bad")


CASES = [Case(f"generate-{name}", [*GEN, *extra], shape=shape) for name, extra, shape in NUMBERS]
CASES += [Case(name, args, shape=shape, setup=_files) for name, args, shape in STRINGS]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_a_bad_number_or_string_is_one_line(attack, case):
    attack(case)


# ---------------------------------------------------------------- generated command lines
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

VALUES = st.sampled_from(["0", "1", "-1", "2", "99", HUGE[:30], "nan", "", " ", "x", BAD, "{db}", "{tmp}",
                          "/dev/null", "md", "txt", "jsonl", "events", "all", "pinned", "retained", "vault",
                          "((vault", "-", "--", "1e3"])
FLAGS = {"sessions": ["--db", "--search", "--session", "--limit", "--json"],
         "export": ["--db", "--session", "--what", "--format", "-o", "--force"]}


@st.composite
def command_lines(draw):
    cmd = draw(st.sampled_from(sorted(FLAGS)))
    args = [cmd, "--db", "{db}"]
    for flag in draw(st.lists(st.sampled_from(FLAGS[cmd]), max_size=4)):
        args.append(flag)
        if flag not in ("--json", "--force"):
            args.append(draw(VALUES))
    return args


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command_lines())
def test_generated_command_lines_exit_0_or_one_line(cli, paths, args):
    """Any mix of flags and values for the store's readers: exit 0, or 2 with one line; the
    database never changes. (No NUL among the values: a command line cannot hold one.)"""
    import os

    from tests.attack.harness import db_state, fill, one_line

    before = db_state(paths["db"])
    for k, a in enumerate(args[:-1]):  # every -o into the case's folder, never the working one
        if a == "-o":
            args[k + 1] = os.path.join(paths["tmp"], "out")
    code, out, err = cli(*fill(args, paths))
    assert code in (0, 2), (args, code, err)
    if code == 2:
        one_line(err, 2)
    assert "Traceback" not in err
    assert db_state(paths["db"]) == before
    if os.path.exists(os.path.join(paths["tmp"], "out")) and not os.path.isdir(os.path.join(paths["tmp"], "out")):
        os.unlink(os.path.join(paths["tmp"], "out"))


GEN_FLAGS = ["--window", "--budget", "--sinks", "--pin", "--fold-budget", "--fold-block", "--auto-topk", "--top-k",
             "--temperature", "--seed", "-n", "--auto-pool", "--min-p"]
GEN_VALUES = st.sampled_from(["0", "1", "2", "3", "4", "8", "16", "24", "64", "1000", "-1", "0.5", "vault", "/v.*t/",
                              "/(/", "4821", "zzz", "nan", BAD, "fifo", "credit"])


@st.composite
def continuations(draw):
    args = ["generate", "--db", "{db}", "--session", "1", "--model", "{model}", "-n", "2"]
    for flag in draw(st.lists(st.sampled_from(GEN_FLAGS), max_size=4)):
        args += [flag, draw(GEN_VALUES)]
    return args


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(continuations())
def test_generated_continuations_exit_0_or_change_nothing(cli, paths, args):
    """Any mix of settings for `generate --session`: exit 0, or 2 with one line and the
    database as it was."""
    from tests.attack.harness import db_state, fill, one_line

    before = db_state(paths["db"])
    code, out, err = cli(*fill(args, paths))
    assert code in (0, 2), (args, code, err)
    assert "Traceback" not in err
    if code == 2:
        one_line(err, 2)
        assert db_state(paths["db"]) == before
