"""The Triton path (heedful's kernels, interpreted on CPU) and the SDPA path give the same
tokens for whole sessions: pins, eviction, recall, fold, automatic fold, top-k selection,
on a GQA model with partial rotary (tiny Qwen3.5) and on Llama. And the padded decode step
(selector/static.py: what `--cuda-graph auto` captures on CUDA, run eagerly here) gives the
tokens of the unpadded one on both paths."""

from __future__ import annotations

import pytest

from heedful.errors import HeedfulError
from heedful.selector.attention import path_for
from heedful.selector.recorder import MemoryRecorder
from heedful.selector.session import Session, SessionConfig

pytestmark = pytest.mark.skipif(not __import__("importlib").util.find_spec("triton"), reason="triton not installed")


def _run(lm, attention, static=None, monkeypatch=None, **cfg):
    if monkeypatch is not None:
        monkeypatch.setenv("HEEDFUL_CUDA_GRAPH", "static" if static else "off")
    s = Session(lm.model, lm.tokenizer, config=SessionConfig(model="t", temperature=0, **cfg),
                recorder=MemoryRecorder(), gated=lm.gated, attention=attention)
    s.prompt("Alice keeps the key 7310 under the mat. Bob went to the market to buy bread and milk.",
             pin=["7310"])
    out = [t.id for t in s.generate(24)]
    s.drop("market")
    s.recall("Alice")
    out += [t.id for t in s.generate(12)]
    if not cfg.get("fold_budget"):
        s.recall("bread and milk")
        s.unpin("bread and milk")
        s.fold("bread and milk", gist="food")
        out += [t.id for t in s.generate(8)]
    st = s.residency.static
    assert s.stats().evicted > 0  # rows left with the window: the index set had holes
    if static:  # every decode step of the pins + window settings was padded
        assert st is not None and st.steps >= (24 + 12 + 8 if not cfg.get("fold_budget") else 36) - 1
    elif monkeypatch is not None:
        assert st is None
    _run.last = s
    return out, s.retained()


SETTINGS = {
    "pins+window": dict(window=12, budget=48),
    "top-k": dict(window=8, budget=48, auto_topk=2),
    "autofold": dict(window=12, budget=40, fold_budget=2, fold_block=4),
}


_UNPADDED: dict = {}  # (model, attention, kind) -> what the unpadded step gave (reused across tests)


def _unpadded(model, lm, attention, kind, monkeypatch):
    key = (model, attention, kind)
    if key not in _UNPADDED:
        _UNPADDED[key] = _run(lm, attention, static=False, monkeypatch=monkeypatch, **SETTINGS[kind])
    return _UNPADDED[key]


@pytest.mark.parametrize("kind,model", [(k, m) for k in SETTINGS for m in ("tiny_qwen35", "tiny_llama")
                                        # top-k's kernels interpreted are slow: on the GQA, partial-rotary model
                                        if not (k == "top-k" and m == "tiny_llama")])
def test_triton_path_equals_sdpa_path(kind, model, request, monkeypatch):
    lm = request.getfixturevalue(model)
    assert _unpadded(model, lm, "triton", kind, monkeypatch) == _unpadded(model, lm, "sdpa", kind, monkeypatch)


def test_the_paths_differ_where_they_should():
    import torch

    assert type(path_for("triton", torch.device("cpu")).resident).__name__ != \
        type(path_for("sdpa", torch.device("cpu")).resident).__name__
    with pytest.raises(HeedfulError, match="--attention 'flash'"):
        path_for("flash", torch.device("cpu"))
    # auto: pins + window through the Triton kernels on CUDA (the resident slots as the index
    # set), dense SDPA on CPU; selection through the kernels of the same backend
    cuda, cpu = path_for("auto", torch.device("cuda")), path_for("auto", torch.device("cpu"))
    assert type(cuda.resident).__name__ == "Resident" and cuda.resident.kernels.name == "triton"
    assert cuda.selected.kernels.name == "triton" and cuda.needs_order(None, False)
    assert type(cpu.resident).__name__ == "Dense" and cpu.selected.kernels.name == "reference"


@pytest.mark.parametrize("model,attention,kind", [("tiny_qwen35", "triton", "pins+window"),
                                                   ("tiny_qwen35", "sdpa", "autofold"),
                                                   ("tiny_llama", "triton", "autofold"),
                                                   ("tiny_llama", "sdpa", "pins+window")])
def test_padded_decode_step_equals_the_unpadded_one(model, attention, kind, request, monkeypatch):
    lm = request.getfixturevalue(model)
    padded = _run(lm, attention, static=True, monkeypatch=monkeypatch, **SETTINGS[kind])
    assert padded == _unpadded(model, lm, attention, kind, monkeypatch)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="CUDA graph capture needs a CUDA GPU")
@pytest.mark.parametrize("attention", ["auto", "sdpa"])
def test_captured_step_on_cuda(attention, tiny_qwen35_dir, monkeypatch):
    """On CUDA: the captured step (replayed) gives the tokens of the unpadded one."""
    from heedful.models.loading import load_model

    lm = load_model(str(tiny_qwen35_dir), dtype="float32", device="cuda")
    monkeypatch.setenv("HEEDFUL_CUDA_GRAPH", "auto")
    captured = _run(lm, attention, **SETTINGS["pins+window"])
    st = _run.last.residency.static
    assert st.mode == "graph" and st.failed is None and st.captures >= 1 and st.replays >= 30, st.stats()
    monkeypatch.setenv("HEEDFUL_CUDA_GRAPH", "off")
    assert captured == _run(lm, attention, **SETTINGS["pins+window"])


def test_cuda_graph_choice():
    import torch

    from heedful.selector.static import mode_for

    assert mode_for("auto", torch.device("cpu")) is None
    assert mode_for("auto", torch.device("cuda")) == "graph"
    assert mode_for("off", torch.device("cuda")) is None
    assert mode_for("static", torch.device("cpu")) == "static"
    with pytest.raises(HeedfulError, match="--cuda-graph 'always'"):
        mode_for("always", torch.device("cpu"))


# ops that read a device tensor back to the host, or make one from Python data (on CUDA a
# synchronous copy): either one breaks a CUDA graph's capture
NOT_CAPTURABLE = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "lift_fresh", "item", "_assert_async")


@pytest.mark.parametrize("attention", ["sdpa", "triton"])
def test_the_padded_step_syncs_nothing(attention, tiny_qwen35, monkeypatch):
    """What CUDA captures (StaticDecode._body) runs no op that reads the device or makes a
    tensor from host data, on either path: checked here op by op, on CPU."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from heedful.selector.static import StaticDecode

    seen: set[str] = set()

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.add(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    body = StaticDecode._body

    def watched(self, bucket):
        with Ops():
            body(self, bucket)

    monkeypatch.setattr(StaticDecode, "_body", watched)
    _run(tiny_qwen35, attention, static=True, monkeypatch=monkeypatch, window=12, budget=48)
    assert seen and "index_copy_" in seen and not seen & set(NOT_CAPTURABLE), sorted(seen & set(NOT_CAPTURABLE))
