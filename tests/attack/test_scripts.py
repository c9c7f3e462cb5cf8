"""Replay scripts: malformed lines each refused as FILE:LINE in one line and nothing
written; property-based generation of script lines and of targets (text, regex, ranges);
a script that is not a regular file refused before it is opened; a reader that leaves
(`| head`) or a full output device."""

from __future__ import annotations

import io
import json
import os
import string
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heedful.app.script import parse_script
from heedful.errors import HeedfulError, TargetError
from tests.attack.harness import Case, one_line

OK = ['{"op": "config", "seed": 0, "window": 8, "budget": 24}', '{"op": "prompt", "text": "The vault code is 4821."}',
      '{"op": "generate", "n": 2}']
BAD_LINES = {
    "not-json": ("{op: prompt}", r":1: not JSON"),
    "truncated-last-line": ('{"op": "prompt", "text": "x"', r":1: truncated last line"),
    "array": ("[1, 2]", r":1: "),
    "unknown-op": ('{"op": "explode"}', r":1: .*explode"),
    "no-op": ('{"text": "x"}', r":1: .*op"),
    "nan": ('{"op": "config", "temperature": NaN}', r":1: .*NaN"),
    "infinity": ('{"op": "config", "temperature": Infinity}', r":1: .*Infinity"),
    "5000-digits": ('{"op": "config", "seed": ' + "9" * 5000 + "}", r":1: an integer of more than 4,300 digits"),
    "int-past-2-63": ('{"op": "config", "seed": 9223372036854775808}', r":1: .*seed"),
    "window-text": ('{"op": "config", "window": "8"}', r":1: .*window"),
    "unknown-setting": ('{"op": "config", "colour": "red"}', r":1: .*colour"),
    "nested": ('{"op": "prompt", "text": {"a": [[[[1]]]]}}', r":1: "),
    "deep-nesting": ('{"op": "prompt", "text": ' + "[" * 100000 + "]" * 100000 + "}", r":1: "),
    "empty-prompt": ('{"op": "prompt", "text": ""}', r":1: prompt: field 'text'"),
    "lone-surrogate": ('{"op": "prompt", "text": "a\\ud800b"}', r":1: .*(surrogate|Unicode)"),
    "generate-negative": ('{"op": "config"}\n{"op": "generate", "n": -1}', r":2: generate: field 'n'"),
    "generate-over-limit": ('{"op": "config"}\n{"op": "generate", "n": 1000001}', r":2: generate: field 'n'"),
    "generate-bool": ('{"op": "config"}\n{"op": "generate", "n": true}', r":2: generate: field 'n'"),
    "range-one-number": ('{"op": "config"}\n{"op": "pin", "range": [3]}', r":2: "),
    "range-floats": ('{"op": "config"}\n{"op": "pin", "range": [1.5, 3]}', r":2: "),
    "two-targets": ('{"op": "config"}\n{"op": "pin", "text": "a", "regex": "b"}', r":2: "),
    "bad-regex": ('{"op": "config"}\n{"op": "pin", "regex": "(unclosed"}', r":2: .*regex"),
    "budget-below-window": ('{"op": "config", "window": 16, "budget": 8}\n{"op": "prompt", "text": "x"}',
                            r":1: budget 8 is smaller than window 16(?!.*--)"),
    "fold-budget-over-budget": ('{"op": "config", "window": 8, "budget": 16, "fold_budget": 40}',
                                r":1: .*fold_budget 40(?!.*--)"),
    "config-twice": ('{"op": "config"}\n{"op": "config"}', r":2: config must be the first"),
    "not-utf8": (b'{"op": "prompt", "text": "\xff"}'.decode("latin-1"), r":1: not UTF-8"),
    "pin-never-there": ("\n".join(OK + ['{"op": "pin", "text": "zebra"}']), r":4: .*'zebra' not found"),
    "range-past-end": ("\n".join(OK + ['{"op": "pin", "range": [0, 999]}']), r":4: .*past the end"),
    "stop-mismatch": ("\n".join(OK + ['{"op": "stop", "at": 3}']), r":4: "),
    "rewind-past-end": ("\n".join(OK + ['{"op": "rewind", "index": 999}']), r":4: "),
    "catastrophic-regex": ("\n".join(OK[:2] + ['{"op": "prompt", "text": "' + "a" * 40 + '!"}',
                                              '{"op": "pin", "regex": "(a|a)+b"}']), r":4: .*(longer than|refused)"),
}


def _script(text):
    def setup(tmp, paths):
        data = text.encode("latin-1") if "\xff" in text else text.encode("utf-8", "surrogatepass")
        open(f"{tmp}/s.jsonl", "wb").write(data + (b"" if "truncated" in text else b"\n"))

    return setup


def _truncated(tmp, paths):
    open(f"{tmp}/s.jsonl", "w").write('{"op": "prompt", "text": "x"')


CASES = [Case(f"script-{name}", ["replay", "{tmp}/s.jsonl", "--db", "{db}", "--model", "{model}"],
              shape=r"s\.jsonl" + shape, setup=_truncated if name == "truncated-last-line" else _script(text))
         for name, (text, shape) in BAD_LINES.items()]
for c in CASES:
    if c.id == "script-catastrophic-regex":  # 2 s of matching, then refused
        c.marks = [pytest.mark.slow]
CASES += [
    Case("script-missing", ["replay", "{tmp}/none.jsonl", "--db", "{db}"], shape=r"none\.jsonl"),
    Case("script-empty", ["replay", "{tmp}/s.jsonl", "--db", "{db}"], shape=r"s\.jsonl:1: empty script",
         setup=lambda tmp, p: open(f"{tmp}/s.jsonl", "w").close()),
    Case("script-fifo", ["replay", "{tmp}/s.jsonl", "--db", "{db}"], shape=r"is a FIFO",
         setup=lambda tmp, p: os.mkfifo(f"{tmp}/s.jsonl")),
    Case("script-device", ["replay", "/dev/zero", "--db", "{db}"], shape=r"/dev/zero: is a device"),
    Case("script-directory", ["replay", "{tmp}", "--db", "{db}"], shape=r"directory"),
    Case("script-new-db-not-made", ["replay", "{tmp}/s.jsonl", "--db", "{tmp}/new.db", "--model", "{model}"],
         shape=r"s\.jsonl:4: ", setup=_script("\n".join(OK + ['{"op": "pin", "text": "zebra"}']))),
    Case("script-db-is-fifo", ["replay", "{tmp}/s.jsonl", "--db", "{tmp}/fifo.db"], shape=r"is a FIFO",
         setup=lambda tmp, p: (_script("\n".join(OK))(tmp, p), os.mkfifo(f"{tmp}/fifo.db"))),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_a_bad_script_is_one_line_and_writes_nothing(attack, case):
    attack(case)


# ---------------------------------------------------------------- properties
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                           | st.text(max_size=20), lambda c: st.lists(c, max_size=3)
                           | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=6)
OPS = ["config", "prompt", "generate", "pin", "unpin", "drop", "recall", "fold", "unfold", "rewind", "stop", "set",
       "resume", "say", "accept", "reject", "explode"]
KEYS = ["text", "regex", "range", "n", "at", "index", "gist", "occurrence", "append", "by", "pins", "window",
        "budget", "seed", "temperature", "tokens", "config", "role", "stop_at_eos", "score"]
lines = st.builds(lambda op, d: json.dumps({"op": op, **d}), st.sampled_from(OPS),
                  st.dictionaries(st.sampled_from(KEYS), json_values, max_size=4))
raw_lines = st.one_of(lines, st.text(max_size=40), st.binary(max_size=40).map(lambda b: b.decode("latin-1")))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(raw_lines, min_size=1, max_size=6))
def test_the_parser_accepts_or_names_the_line(tmp_path, script_lines):
    """Any file: parsed, or refused with FILE:LINE: reason in one line; nothing else raises."""
    path = tmp_path / "p.jsonl"
    path.write_bytes("\n".join(script_lines).encode("utf-8", "surrogatepass"))
    try:
        steps = parse_script(path)
    except HeedfulError as e:
        msg = str(e)
        assert "\n" not in msg and msg.startswith(f"{path}:"), msg
        return
    assert all(s.op in OPS and s.op != "explode" for s in steps)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.ascii_letters + " .,!0123456789", min_size=1, max_size=60),
       st.one_of(st.tuples(st.integers(-5, 80), st.integers(-5, 80)), st.text(max_size=8),
                 st.text(alphabet="a.*+?()[]|^$\\{}0-9", max_size=10).map(lambda p: {"regex": p})))
def test_targets_resolve_inside_the_stream_or_are_one_line(text, target):
    from heedful.selector.targets import resolve

    # one token per character: starts[i] = i
    n = len(text)
    try:
        ranges = resolve(target, text, list(range(n)), n)
    except TargetError as e:
        assert "\n" not in str(e)
        return
    for a, b in ranges:
        assert 0 <= a < b <= n


# ---------------------------------------------------------------- output
class _Leaves(io.StringIO):
    """A reader that takes one line, then leaves (`| head -n 1`)."""

    def write(self, s):
        if self.getvalue().count("\n") >= 1:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(s)


def _with_stdout(out, capsys, *args):
    import heedful.cli

    old = sys.stdout
    sys.stdout = out
    try:
        with pytest.raises(SystemExit) as e:
            heedful.cli.main([str(a) for a in args])
    finally:
        sys.stdout = old
    return e.value.code, capsys.readouterr().err


@pytest.fixture
def script(paths, tmp_path):
    s = tmp_path / "ok.jsonl"
    s.write_text("\n".join(OK) + "\n")
    return s


def test_replay_into_head_lands_the_script(script, paths, tmp_path, capsys):
    """The reported defect: exit 0, nothing recorded and a 0-byte new.db."""
    db = tmp_path / "new.db"
    code, err = _with_stdout(_Leaves(), capsys, "replay", script, "--db", db, "--json", "--model", paths["model"])
    assert code == 0, err
    from heedful.store import Store

    with Store.open(db, readonly=True) as store:
        assert store.session(1).tokens > 0


@pytest.mark.parametrize("command", ["replay", "generate", "export", "export-o"])
def test_a_full_output_device_is_one_line_exit_1(command, script, paths, tmp_path, capsys):
    args = {"replay": ["replay", script, "--db", tmp_path / "new.db", "--model", paths["model"], "--json"],
            "generate": ["generate", "hi", "-n", "2", "--json", "--model", paths["model"]],
            "export": ["export", "--db", paths["db"]],
            "export-o": ["export", "--db", paths["db"], "-o", "/dev/full", "--force"]}[command]
    with open("/dev/full", "w") as full:
        code, err = _with_stdout(full, capsys, *args)
    assert code == 1, err
    one_line(err, 1, r"cannot write: No space left on device")
    assert not (tmp_path / "new.db").exists()
