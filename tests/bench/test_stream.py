"""`heedful bench stream` end to end on a small synthetic model: both runs, constant KV bytes
for heedful, growing ones for the full cache, and the op counts."""

from __future__ import annotations

import re

import pytest

from heedful.cli import main


def test_bench_stream_prints_both_runs_and_op_counts(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "stream", "--synthetic", "--layers", "1", "--hidden", "64", "--context", "512", "-n", "120",
              "--early", "60", "--span", "10", "--window", "16", "--budget", "32"])
    out = capsys.readouterr().out
    assert e.value.code == 0, out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if re.match(r"(heedful|stock)\s{2,}\d", line)}
    heedful, stock = rows["heedful"], rows["stock"]
    assert heedful[4] == heedful[5]  # KV bytes at the early mark == at the end: allocated once
    assert int(stock[5].replace(",", "")) > int(stock[4].replace(",", ""))  # the full cache grows
    ops = re.search(r"aten ops per decode step: heedful (\d+), stock (\d+)", out)
    assert ops and int(ops.group(1)) > 0 and int(ops.group(2)) > 0
    # heedful's step is the stock step plus its cache and policy work: more ops, not many more
    assert int(ops.group(2)) < int(ops.group(1)) < 2 * int(ops.group(2))
    stream = re.search(r"stream bookkeeping in RAM: (\d+) bytes per token", out)
    assert stream and 8 <= int(stream.group(1)) <= 100
