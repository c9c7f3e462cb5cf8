"""The kernels benchmark command runs end to end (CPU smoke shapes) and refuses to run
its GPU table without a GPU."""

import pytest
import torch

from heedful.cli import main


def _run(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return (e.value.code, *capsys.readouterr())


def test_cpu_smoke_prints_the_table(capsys):
    code, out, err = _run(capsys, "bench", "kernels", "--cpu-smoke")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.strip().startswith("512")]
    assert len(rows) == 2 and all("x |" in r for r in rows)
    # floor: min+max of 512/64 blocks (Hkv 2, D 64, fp32) + q, over K and V of k rows + q + indices
    q_bytes = 8 * 64 * 4
    for row, k in zip(rows, (64, 256)):
        want = (2 * 2 * 8 * 64 * 4 + q_bytes) / (2 * k * 64 * 2 * 4 + q_bytes + 2 * k * 4)
        assert row.split()[-1] == f"{100 * want:.0f}%"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_gpu_table_needs_a_gpu(capsys):
    code, out, err = _run(capsys, "bench", "kernels")
    assert code == 2 and "needs a CUDA GPU" in err
