"""The `heedful generate` contract (stdout, --json, exit codes) and help on every command."""

from __future__ import annotations

import json

import pytest

from heedful.cli import main


def _run(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_generate_json_stream(capsys, tiny_qwen35_dir):
    code, out, err = _run(capsys, "generate", "The vault code is 4821. Remember it.", "--model", str(tiny_qwen35_dir),
                          "-n", "30", "--window", "8", "--budget", "16", "--pin", "4821", "--pin", "/Rem\\w+/",
                          "--json", "--ignore-eos", "--dtype", "float32")
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    toks, summary = lines[:-1], lines[-1]
    assert len(toks) == 30
    assert all(set(t) == {"index", "id", "text", "retained"} for t in toks)
    assert [t["index"] for t in toks] == list(range(toks[0]["index"], toks[0]["index"] + 30))
    assert summary["event"] == "summary" and summary["tokens"] == toks[-1]["index"] + 1
    assert summary["peak_resident"] <= 16 and summary["resident"] <= 16 and summary["evicted"] > 0
    assert summary["tokens_per_s"] > 0


def test_generate_plain_text(capsys, tiny_llama_dir):
    code, out, err = _run(capsys, "generate", "Alice met Bob", "--model", str(tiny_llama_dir), "-n", "5",
                          "--ignore-eos", "--window", "8", "--budget", "16")
    assert code == 0, err
    assert out.endswith("\n") and "tok/s" in err


@pytest.mark.parametrize("args,match", [
    (["--pin", "not in the prompt"], "not found"),
    (["--pin", "/[unclosed/"], "bad regex"),
    (["--window", "32", "--budget", "16"], "smaller than window"),
    (["--model", "/definitely/not/here"], "no such directory"),
])
def test_generate_bad_input_exits_2_with_one_line(capsys, tiny_qwen35_dir, args, match):
    argv = ["generate", "The vault code is 4821.", "-n", "3"]
    if "--model" not in args:
        argv += ["--model", str(tiny_qwen35_dir)]
    code, out, err = _run(capsys, *argv, *args)
    assert code == 2
    assert match in err and len(err.strip().splitlines()) == 1


def test_help_on_every_command(capsys):
    from heedful.cli import cli

    names = cli.list_commands(None)
    assert {"generate", "bench"} <= set(names)
    for name in names:
        code, out, err = _run(capsys, name, "--help")
        assert code == 0 and "Usage" in out, name
    for group in ("bench", "train"):
        sub = cli.get_command(None, group)
        for name in sub.list_commands(None):
            code, out, err = _run(capsys, group, name, "--help")
            assert code == 0 and "Usage" in out, (group, name)
    assert {"evaluate", "ship"} <= set(cli.get_command(None, "train").list_commands(None))


def test_python_dash_m_runs_the_same_cli():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "heedful", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "generate" in r.stdout and "bench" in r.stdout
