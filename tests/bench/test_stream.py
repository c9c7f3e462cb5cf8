"""`heedful bench stream` end to end on a small synthetic model: both runs interleaved,
constant KV bytes for heedful, growing ones for the full cache, the op counts and the JSON
summary line."""

from __future__ import annotations

import json
import re

import pytest

from heedful.cli import main


def _bench(capsys, *extra):
    with pytest.raises(SystemExit) as e:
        main(["bench", "stream", "--synthetic", "--layers", "2", "--hidden", "64", "--context", "512", "-n", "120",
              "--early", "60", "--span", "10", "--window", "16", "--budget", "40", *extra])
    out = capsys.readouterr().out
    assert e.value.code == 0, out
    return out


def test_bench_stream_prints_both_runs_op_counts_and_json(capsys):
    out = _bench(capsys, "--json")
    rows = {line.split()[0]: line.split() for line in out.splitlines() if re.match(r"(heedful|stock)\s{2,}\d", line)}
    heedful, stock = rows["heedful"], rows["stock"]
    assert heedful[5] == heedful[6]  # KV bytes at the early mark == at the end: allocated once
    assert int(stock[6].replace(",", "")) > int(stock[5].replace(",", ""))  # the full cache grows
    summary = json.loads(out.strip().splitlines()[-1])
    assert set(summary) >= {"heedful", "stock", "tokens", "early", "device"}
    assert summary["tokens"] == 120 and summary["early"] == 60 and summary["device"] == "cpu"
    for run in ("heedful", "stock"):
        assert set(summary[run]) == {"ms_early", "ms_end", "ops_per_step", "kv_bytes_end"}
        assert summary[run]["ms_early"] > 0 and summary[run]["ms_end"] > 0
    assert summary["heedful"]["kv_bytes_end"] < summary["stock"]["kv_bytes_end"]
    # rows never move and only the pinned rows are re-rotated: a step costs about what stock's
    # does (stock: two cats per layer; heedful: two index_copy_ per layer and a few ops a step)
    h, s = summary["heedful"]["ops_per_step"], summary["stock"]["ops_per_step"]
    assert s - 10 <= h <= s + 8, (h, s)
    stream = re.search(r"stream bookkeeping in RAM: (\d+) bytes per token", out)
    assert stream and 8 <= int(stream.group(1)) <= 100


def test_without_pins_a_step_moves_and_rotates_nothing(capsys):
    """No pins: no row is re-rotated or copied at a step, so heedful runs no more ops than
    stock; with pins, a handful more (a rotation of the pinned rows, for all layers at once)."""
    bare = json.loads(_bench(capsys, "--json", "--pins", "0", "--skip-stock").strip().splitlines()[-1])
    pinned = json.loads(_bench(capsys, "--json", "--pins", "12", "--skip-stock").strip().splitlines()[-1])
    extra = pinned["heedful"]["ops_per_step"] - bare["heedful"]["ops_per_step"]
    assert 1 <= extra <= 8, extra


@pytest.mark.parametrize("name, billions", [("qwen3-0.6b", 0.596), ("qwen3-8b", 8.19), ("llama-3.2-1b", 1.236),
                                            ("qwen3.5-default", 8.95)])
def test_presets_have_their_real_sizes(name, billions):
    """Built on the meta device: the published parameter counts, with no memory spent."""
    from heedful.bench.presets import preset_parameters

    assert abs(preset_parameters(name) / 1e9 - billions) < 0.01


def test_a_preset_too_big_for_the_machine_is_refused_in_one_line(capsys, monkeypatch):
    import heedful.bench.presets as presets

    monkeypatch.setattr(presets, "_free_bytes", lambda device: 2**30)  # 1 GiB free
    with pytest.raises(SystemExit) as e:
        main(["bench", "stream", "--preset", "qwen3-8b", "--device", "cpu", "-n", "100", "--early", "50"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert "--preset qwen3-8b" in err[0] and "GiB" in err[0]
