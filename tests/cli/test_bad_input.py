"""Bad input that once gave a traceback: each is one line on stderr and exit 2 now, and the
documented limits (heedful/limits.py) are refused before anything runs."""

from __future__ import annotations

import re
import shutil
import time

import pytest

from heedful.errors import HeedfulError, TargetError
from heedful.selector import targets
from heedful.selector.session import Session


def one_line(code, err) -> bool:
    return code == 2 and err.count("\n") == 1 and err.startswith("heedful: error: ") and "Traceback" not in err


@pytest.mark.parametrize("args,match", [
    (["--temperature", "nan"], "not a finite number"),
    (["--temperature", "inf"], "not a finite number"),
    (["--top-p", "nan"], "not a finite number"),
    (["--seed", str(2**70)], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["-n", str(10**26)], "--max-tokens"),
    (["--device", "meta"], "holds no data"),
    (["--device", "xla"], "cannot run here"),
])
def test_settings_out_of_range_are_one_line(cli, tiny_qwen35_dir, args, match):
    code, out, err = cli("generate", "The vault code is 4821.", "--model", tiny_qwen35_dir, "-n", "2", *args)
    assert one_line(code, err) and match in err, err


def test_invalid_unicode_in_a_prompt_is_one_line(cli, tiny_qwen35_dir):
    code, out, err = cli("generate", "caf\udce9 au lait", "--model", tiny_qwen35_dir, "-n", "2")
    assert one_line(code, err) and "invalid Unicode" in err, err


def test_a_prompt_over_the_limit_is_refused_before_tokenizing(tiny_qwen35, monkeypatch):
    s = Session(tiny_qwen35.model, tiny_qwen35.tokenizer, window=8, budget=32)
    monkeypatch.setattr(tiny_qwen35.tokenizer, "__call__", lambda *a, **k: pytest.fail("tokenized"))
    with pytest.raises(TargetError, match="over the limit"):
        s.prompt("x" * 1_000_001)
    assert len(s) == 0


def test_truncated_weights_and_missing_tokenizer_are_one_line(cli, tiny_qwen35_dir, tmp_path):
    trunc = tmp_path / "trunc"
    shutil.copytree(tiny_qwen35_dir, trunc)
    w = trunc / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    code, out, err = cli("generate", "hello", "--model", trunc, "-n", "2")
    assert one_line(code, err) and "cannot be read" in err, err
    notok = tmp_path / "notok"
    shutil.copytree(tiny_qwen35_dir, notok)
    for f in notok.glob("tokenizer*"):
        f.unlink()
    code, out, err = cli("generate", "hello", "--model", notok, "-n", "2")
    assert one_line(code, err) and "no tokenizer files" in err, err


def test_a_backtracking_regex_is_stopped(tiny_qwen35, monkeypatch):
    monkeypatch.setattr(targets, "REGEX_TIMEOUT_S", 0.2)
    s = Session(tiny_qwen35.model, tiny_qwen35.tokenizer, window=64, budget=128)
    s.prompt("a" * 40)
    t0 = time.monotonic()
    with pytest.raises(TargetError, match="ran longer than"):
        s.pin(re.compile(r"(a|aa)+c"))
    assert time.monotonic() - t0 < 10
    assert s.pins() == []
    assert s.pin(re.compile(r"A+", re.IGNORECASE)) == [(0, len(s))]  # re's flags still apply


def test_session_settings_refuse_non_finite_and_huge(tiny_qwen35):
    m, t = tiny_qwen35.model, tiny_qwen35.tokenizer
    for bad in ({"temperature": float("nan")}, {"temperature": float("inf")}, {"top_p": float("nan")},
                {"seed": 2**64}, {"seed": -5}):
        with pytest.raises(HeedfulError):
            Session(m, t, window=8, budget=32, **bad)
    s = Session(m, t, window=8, budget=32)
    s.prompt("hello there")
    with pytest.raises(HeedfulError, match="temperature"):
        s.set(temperature=float("nan"))
    with pytest.raises(TargetError, match="-n"):
        s.generate(10**26)


SCRIPT_HEAD = '{"op": "config", "window": 8, "budget": 32}\n{"op": "prompt", "text": "The vault code is 4821."}\n'


@pytest.mark.parametrize("name,line,reason", [
    ("nan", '{"op": "set", "temperature": NaN}', "non-finite"),
    ("infinity", '{"op": "config", "temperature": Infinity}', "non-finite"),
    ("surrogate", '{"op": "prompt", "text": "caf\\udce9"}', "invalid Unicode"),
    ("surrogate-target", '{"op": "pin", "text": "\\ud800"}', "invalid Unicode"),
    ("deep", '{"op": "prompt", "text": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ("huge-n", '{"op": "generate", "n": 100000000000000000000000000}', "field 'n' must be"),
    ("huge-range", '{"op": "pin", "range": [0, 100000000000000000000000000]}', "field 'range'"),
    ("huge-seed", '{"op": "config", "seed": 100000000000000000000000000}', "wrong type"),
    ("long-line", '{"op": "prompt", "text": "' + "x" * 4_100_000 + '"}', "over the limit"),
])
def test_bad_script_lines_are_refused_before_running(cli, tmp_path, name, line, reason):
    script = tmp_path / "s.jsonl"
    head = "" if name in ("infinity", "huge-seed") else SCRIPT_HEAD
    script.write_text(head + line + "\n")
    db = tmp_path / "out.db"
    code, out, err = cli("replay", script, "--db", db)
    assert one_line(code, err) and reason in err, err[:300]
    assert "s.jsonl:" in err and not db.exists()


def test_generate_into_a_closed_pipe_exits_0(tmp_path, tiny_qwen35_dir):
    import subprocess
    import sys

    cmd = (f"{sys.executable} -m heedful generate 'The vault code is 4821.' --model {tiny_qwen35_dir} "
           f"-n 200 --ignore-eos --json | head -2")
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2 and r.stderr == ""
