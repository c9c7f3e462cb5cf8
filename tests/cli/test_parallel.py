"""Tensor parallelism on CPU: two ranks (gloo) against one process.

Each launch starts two real processes, as torchrun does: one test through torchrun itself,
the others with torchrun's environment set by hand (RANK, WORLD_SIZE, MASTER_ADDR...), so
that each rank's exit code and output can be read on its own. Every comparison is with a
one-process run of the same command or script, greedy, with pins and eviction on.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tiny_models import build_tiny_model, moved_compressor

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).resolve().parent / "tp_child.py"
PROMPT = "The vault code is 4821. Remember it. Alice met Bob at the station at noon. The quick brown fox."
SETTINGS = ["--window", "8", "--budget", "24", "--ignore-eos"]


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tp_qwen3"), "qwen3")


@pytest.fixture(scope="module")
def hybrid_dir(tmp_path_factory):
    """Qwen3.5 hybrid: a linear-attention layer (recurrent state) and a gated full-attention layer."""
    return build_tiny_model(tmp_path_factory.mktemp("tp_hybrid"), "qwen3_5_hybrid")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path, args, world=2, env=None, timeout=180):
    """Starts `world` ranks of tp_child.py (the heedful CLI); returns [(code, stdout, stderr)]
    per rank and the seconds the slowest took."""
    port, procs, files = _free_port(), [], []
    base = {**os.environ, "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    t0 = time.monotonic()
    for r in range(world):
        out, err = open(tmp_path / f"out{r}", "w+"), open(tmp_path / f"err{r}", "w+")
        files.append((out, err))
        procs.append(subprocess.Popen([sys.executable, str(CHILD), *map(str, args)], stdout=out, stderr=err,
                                      env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}, cwd=ROOT))
    results = []
    for p, (out, err) in zip(procs, files):
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.seek(0), err.seek(0)
        results.append((p.returncode, out.read(), err.read()))
    return results, time.monotonic() - t0


def _ids(jsonl: str) -> list[int]:
    return [json.loads(x)["id"] for x in jsonl.splitlines() if '"index"' in x]


def _stored(db) -> dict[int, list[int]]:
    con = sqlite3.connect(db)
    rows = con.execute("SELECT session, token_id FROM tokens ORDER BY session, idx").fetchall()
    con.close()
    out: dict[int, list[int]] = {}
    for sid, tid in rows:
        out.setdefault(sid, []).append(tid)
    return out


def test_tp_refused_outside_torchrun_and_with_device_options(cli, qwen3_dir, tmp_path):
    for extra, match in [([], "--tp auto: needs torchrun"),
                         (["--device", "cpu"], "--device cpu: not with --tp auto"),
                         (["--device-map", "auto"], "--device-map auto: not with --tp auto"),
                         (["--max-memory", "cpu=1GiB"], "--max-memory cpu=1GiB: not with --tp auto")]:
        code, out, err = cli("generate", "x", "--model", qwen3_dir, "--tp", "auto", "--db", tmp_path / "x.db", *extra)
        assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err
        code, out, err = cli("replay", tmp_path / "none.jsonl", "--tp", "auto", *extra)
        assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.db").exists()


def test_a_world_of_one_is_one_process(cli, qwen3_dir, tmp_path, monkeypatch):
    """torchrun --nproc-per-node 1 ... --tp auto: the whole model in the one rank."""
    args = ["generate", PROMPT, "--model", qwen3_dir, "--pin", "4821", "-n", "12", "--json", *SETTINGS]
    code, out, err = cli(*args)
    assert code == 0, err
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(k, v)
    code, out1, err = cli(*args, "--tp", "auto", "--db", tmp_path / "one.db")
    assert code == 0, err
    assert _ids(out1) == _ids(out) and _stored(tmp_path / "one.db")[1][-12:] == _ids(out)
    import torch.distributed as dist

    assert not dist.is_initialized()  # left the group when the run ended


def test_torchrun_generate_matches_one_process_and_records_once(cli, qwen3_dir, tmp_path):
    """`torchrun --nproc-per-node 2 -m heedful generate ... --tp auto`, as a user runs it:
    the same greedy tokens as one process, with a pin and eviction; rank 0 alone prints,
    and the store holds the run once."""
    args = ["generate", PROMPT, "--model", qwen3_dir, "--pin", "4821", "-n", "40", "--json", *SETTINGS]
    code, out, err = cli(*args, "--db", tmp_path / "one.db")
    assert code == 0, err
    one = _ids(out)
    logs = tmp_path / "logs"
    p = subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--nproc-per-node", "2", "--log-dir", logs,
                        "--redirects", "3", "-m", "heedful", *map(str, args), "--db", tmp_path / "tp.db",
                        "--tp", "auto"], capture_output=True, text=True, cwd=ROOT, timeout=180,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    rank = {r: next(logs.rglob(f"attempt_0/{r}")) for r in (0, 1)}
    out0 = (rank[0] / "stdout.log").read_text()
    summary = json.loads(out0.splitlines()[-1])
    assert _ids(out0) == one and len(one) == 40
    assert summary["evicted"] > 0 and summary["peak_resident"] <= 24 and summary["pins"] == [[6, 10]]
    assert summary["session"] == 1
    assert (rank[1] / "stdout.log").read_text() == "" and (rank[1] / "stderr.log").read_text() == ""
    assert _stored(tmp_path / "tp.db") == _stored(tmp_path / "one.db")


def test_two_ranks_continue_a_stored_session_and_each_keeps_its_own_heads(cli, qwen3_dir, tmp_path):
    args = ["generate", PROMPT, "--model", qwen3_dir, "--pin", "/Alice/", "-n", "12", "--json", *SETTINGS]
    assert cli(*args, "--db", tmp_path / "one.db")[0] == 0
    (tmp_path / "tp.db").write_bytes((tmp_path / "one.db").read_bytes())
    # auto selection's path too, with the credit pool: the picks of both ranks' heads summed
    more = ["generate", " Then", "--session", "1", "-n", "15", "--json", "--ignore-eos",
            "--budget", "40", "--auto-topk", "1"]
    code, out, err = cli(*more, "--db", tmp_path / "one.db")
    assert code == 0, err
    results, _ = launch(tmp_path, [*more, "--db", tmp_path / "tp.db", "--tp", "auto"],
                        env={"HEEDFUL_TEST_REPORT": str(tmp_path / "report")})
    assert [c for c, _, _ in results] == [0, 0], results[0][2]
    assert _ids(results[0][1]) == _ids(out) and results[1][1:] == ("", "")
    assert _stored(tmp_path / "tp.db") == _stored(tmp_path / "one.db")
    reports = [json.loads((tmp_path / f"report.{r}").read_text()) for r in (0, 1)]
    assert reports[0]["ids"] == reports[1]["ids"]
    assert reports[0]["kv_heads"] == reports[1]["kv_heads"] == [1, 1]  # 2 key/value heads, one per rank


def _script(path: Path, model: Path, ops: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(o) for o in [{"op": "config", "model": str(model), "window": 8,
                                                         "budget": 24, "seed": 0}, *ops]) + "\n")
    return path


def test_replay_two_ranks_qwen3_and_hybrid_match_one_process(cli, qwen3_dir, hybrid_dir, tmp_path):
    """Scripts on two models (the Qwen3.5 hybrid's linear-attention layer sharded too): pins,
    drops, in-place recall, rewind, all with eviction; the same ids under two ranks. A third
    script names a model whose single key/value head two ranks cannot share: refused in
    one line on every rank alike, and the scripts after it still land."""
    stop = {"stop_at_eos": False}
    a = _script(tmp_path / "qwen3.jsonl", qwen3_dir, [
        {"op": "prompt", "text": PROMPT}, {"op": "pin", "text": "4821"}, {"op": "generate", "n": 20, **stop},
        {"op": "drop", "regex": "Alice"}, {"op": "recall", "text": "station"}, {"op": "generate", "n": 10, **stop},
        {"op": "rewind", "index": 40}, {"op": "generate", "n": 8, **stop}])
    b = _script(tmp_path / "hybrid.jsonl", hybrid_dir, [  # the pin is still in the window: no re-encoding
        {"op": "prompt", "text": PROMPT}, {"op": "pin", "text": "fox"}, {"op": "generate", "n": 20, **stop},
        {"op": "recall", "text": "station", "append": True}, {"op": "generate", "n": 10, **stop}])
    odd = _script(tmp_path / "kv1.jsonl", build_tiny_model(tmp_path / "kv1", "qwen3", num_key_value_heads=1),
                  [{"op": "prompt", "text": PROMPT}, {"op": "generate", "n": 4, **stop}])
    # auto selection with the credit pool, small blocks: what stays depends on the picks of
    # both key/value heads, one per rank, summed over the ranks
    auto = tmp_path / "auto.jsonl"
    auto.write_text("\n".join(json.dumps(o) for o in [
        {"op": "config", "model": str(qwen3_dir), "window": 8, "budget": 32, "auto_topk": 2, "block_size": 4,
         "seed": 0}, {"op": "prompt", "text": PROMPT}, {"op": "generate", "n": 60, **stop}]) + "\n")
    # automatic fold with a learned compressor: each rank pools its own heads with their parameters
    cfg = json.loads((Path(qwen3_dir) / "config.json").read_text())
    comp = moved_compressor({"layers": cfg["num_hidden_layers"], "heads": cfg["num_key_value_heads"],
                             "head_dim": cfg["head_dim"]}, block=4, seed=4, scale=0.3)
    comp.save(tmp_path / "comp")
    fold = tmp_path / "fold.jsonl"
    fold.write_text("\n".join(json.dumps(o) for o in [
        {"op": "config", "model": str(qwen3_dir), "window": 8, "budget": 24, "fold_budget": 6, "fold_block": 4,
         "fold_compressor": str(tmp_path / "comp"), "seed": 0},
        {"op": "prompt", "text": PROMPT}, {"op": "generate", "n": 40, **stop}]) + "\n")
    code, out, err = cli("replay", a, b, auto, fold, "--json", "--db", tmp_path / "one.db")
    assert code == 0, err
    results, _ = launch(tmp_path, ["replay", a, odd, b, auto, fold, "--json", "--db", tmp_path / "tp.db", "--tp",
                                   "auto"])
    (c0, out0, err0), (c1, out1, err1) = results
    assert (c0, c1) == (2, 2) and out1 == err1 == ""
    assert [x for x in err0.splitlines() if not x.startswith("[transformers]")] == [  # the hybrid's kernel notes
        f"heedful: error: {odd}:1: --tp auto: --model {tmp_path / 'kv1'} has 1 key/value heads, which 2 ranks cannot "
        "share equally (--nproc-per-node must divide 1)",
        f"heedful: error: 1 of 5 scripts failed and were not written: {odd}"], err0
    gen = [[r["ids"] for r in map(json.loads, o.splitlines()) if r.get("op") == "generate"] for o in (out, out0)]
    assert gen[0] == gen[1] and len(gen[0]) == 7
    assert _stored(tmp_path / "tp.db") == _stored(tmp_path / "one.db")


@pytest.mark.parametrize("how,code,match", [
    ("kill", 1, "lost contact with another rank"),
    ("error", 2, "rank 1 of 2 failed: injected failure at forward 20"),
])
def test_a_rank_that_fails_takes_the_others_down(qwen3_dir, tmp_path, how, code, match):
    """Rank 1 dies (SIGKILL) or fails (bad input only it sees) in the middle of generating:
    rank 0 stops at once with one line and that exit code, and nothing reaches the store."""
    results, seconds = launch(tmp_path, ["generate", PROMPT, "--model", qwen3_dir, "-n", "40", "--db",
                                         tmp_path / "tp.db", "--tp", "auto", *SETTINGS],
                              env={"HEEDFUL_TEST_FAIL": f"1:20:{how}"})
    (c0, out0, err0), (c1, out1, err1) = results
    assert c0 == code and match in err0 and len(err0.strip().splitlines()) == 1, err0
    assert "nothing was written to the store" in err0
    assert c1 == (-9 if how == "kill" else 2) and out1 == err1 == ""
    assert not (tmp_path / "tp.db").exists() or _stored(tmp_path / "tp.db") == {}
    assert seconds < 90
