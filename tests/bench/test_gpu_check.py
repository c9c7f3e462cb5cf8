"""scripts/gpu-check.sh's work, `heedful bench gpu`, end to end with tiny sizes on CPU: both
parts (kernel tests collected, the kernel table's smoke shapes, bench stream against the
static-cache stock run, the tiny gated model and its twin trained, evaluated and packed);
every figure is there and the weights come back loadable."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch

from heedful.bench.gpu import GOALS, KEYS, NO_GPU, merge


@pytest.fixture(scope="module")
def tiny_check(tmp_path_factory):
    from click.testing import CliRunner

    from heedful.bench.gpu import gpu

    out = tmp_path_factory.mktemp("gpu-check")
    before = os.environ.get("HEEDFUL_CUDA_GRAPH")
    r = CliRunner().invoke(gpu, ["--part", "all", "--tiny", "--out", str(out / "out")],
                           env={"HEEDFUL_GPU_WORK": str(out / "work"), "OUT": None})
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert os.environ.get("HEEDFUL_CUDA_GRAPH") == before  # the run's setting did not leak
    return out, json.loads((out / "out" / "figures-partall.json").read_text())


def test_every_figure_is_written(tiny_check):
    _, fig = tiny_check
    assert set(KEYS) <= set(fig)
    assert not [k for k in KEYS if isinstance(fig[k], str) and "not run" in fig[k]]
    assert fig["versions"]["torch"] == torch.__version__
    for m in ("gated", "ungated"):
        assert 0 < fig[f"train.{m}.bits_per_char"] < 12
        assert 0 <= fig[f"train.{m}.first_token_share"] <= 1
        assert 0 <= fig[f"train.{m}.recall_full_attention"] <= 1
        assert fig[f"train.{m}.steps"] == fig["train.gated.steps"] > 0  # the twin: the same steps
    assert fig["train.gated.parameters"] > fig["train.ungated.parameters"]  # the gate's weights
    for ctx in (1024, 32768):  # stand-ins at tiny contexts: the same code as the GPU's run
        assert fig[f"stream.ctx{ctx}.heedful_ms"] > 0 and fig[f"stream.ctx{ctx}.stock_ms"] > 0
        assert fig[f"detail.stream.ctx{ctx}"]["stock_mode"] == "static"
        graph = fig[f"stream.ctx{ctx}.cuda_graph"]  # the padded step ran (captured on CUDA)
        assert graph["steps"] >= 30 and graph["mode"] == ("graph" if torch.cuda.is_available() else "static")
    assert fig["kernels.n32768.k16384.sparse_us"]["value"] > 0
    if not torch.cuda.is_available():
        assert fig["gpu"] == NO_GPU and all(fig[g] == NO_GPU for g in GOALS)
        assert fig["kernel_tests"]["rc"] == 0 and not fig["kernel_tests"]["measured"]


def test_weights_come_back_in_parts_and_load(tiny_check, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out, fig = tiny_check
    for m in ("gated", "ungated"):
        parts = sorted((out / "out").glob(f"{m}.tar.*"))
        assert [p.name for p in parts] == fig["weights"][m]["parts"] and fig["weights"][m]["weights"] == "bf16"
        whole = tmp_path / f"{m}.tar"
        whole.write_bytes(b"".join(p.read_bytes() for p in parts))
        with tarfile.open(whole) as t:
            t.extractall(tmp_path, filter="data")
        back = load_file(str(tmp_path / m / "model.safetensors"))
        trained = load_file(str(out / "work" / m / "model.safetensors"))
        assert back.keys() == trained.keys()
        assert all(torch.equal(back[k], trained[k].to(torch.bfloat16)) for k in back)
        model = AutoModelForCausalLM.from_pretrained(str(tmp_path / m), dtype=torch.float32)
        assert type(model).__name__ == ("Qwen3_5ForCausalLM" if m == "gated" else "Qwen3ForCausalLM")


def test_parts_merge_and_the_script_refuses_a_bad_part(tiny_check, tmp_path):
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text(json.dumps({"x": 1, "y": "unmeasured: part 2 not run"}))
    b.write_text(json.dumps({"x": "unmeasured: part 1 not run", "y": 2}))
    assert merge([str(a), str(b)]) == {"x": 1, "y": 2}
    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu-check.sh"
    r = subprocess.run(["bash", str(script), "3"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


def test_goals_are_judged_from_the_figures(tmp_path):
    from heedful.bench.gpu import Figures, judge

    fig = Figures(tmp_path / "f.json", {1, 2}, "test")
    fig["gpu"] = {"name": "a GPU"}
    for key, value in {"stream.ctx1024.stock_over_heedful": 1.02, "stream.ctx32768.stock_over_heedful": 2.5,
                       "kernels.n32768.k16384.peak_pct": 61.0, "kernels.n131072.k16384.peak_pct": 59.0,
                       "train.gated.bits_per_char": 1.39, "train.gated.recall_full_attention": 0.9,
                       "train.gated.first_token_share": 0.05, "train.ungated.first_token_share": 0.3}.items():
        fig[key] = value
    judge(fig)
    assert fig["goal.decode_1k_vs_stock"] == "met" and fig["goal.decode_32k_3x"] == "not met"
    assert fig["goal.bandwidth_60pct_16k"] == "not met"  # one of the two n under 60%
    assert fig["goal.selection_under_20pct"] == "unmeasured"  # its cells were not measured
    assert fig["goal.bpc_1.4"] == fig["goal.recall_0.85"] == fig["goal.sink_ungated_over_gated"] == "met"
    assert json.loads((tmp_path / "f.json").read_text())["goal.decode_32k_3x"] == "not met"
