"""The Triton path (heedful's kernels, interpreted on CPU) and the SDPA path give the same
tokens for whole sessions: pins, eviction, recall, fold, automatic fold, top-k selection,
on a GQA model with partial rotary (tiny Qwen3.5) and on Llama."""

from __future__ import annotations

import pytest

from heedful.errors import HeedfulError
from heedful.selector.attention import path_for
from heedful.selector.recorder import MemoryRecorder
from heedful.selector.session import Session, SessionConfig

pytestmark = pytest.mark.skipif(not __import__("importlib").util.find_spec("triton"), reason="triton not installed")


def _run(lm, attention, **cfg):
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
    return out, s.retained()


SETTINGS = {
    "pins+window": dict(window=12, budget=48),
    "top-k": dict(window=8, budget=48, auto_topk=2),
    "autofold": dict(window=12, budget=40, fold_budget=2, fold_block=4),
}


@pytest.mark.parametrize("kind", SETTINGS)
@pytest.mark.parametrize("model", ["tiny_qwen35", "tiny_llama"])
def test_triton_path_equals_sdpa_path(kind, model, request):
    lm = request.getfixturevalue(model)
    assert _run(lm, "triton", **SETTINGS[kind]) == _run(lm, "sdpa", **SETTINGS[kind])


def test_the_paths_differ_where_they_should():
    import torch

    assert type(path_for("triton", torch.device("cpu")).resident).__name__ != \
        type(path_for("sdpa", torch.device("cpu")).resident).__name__
    with pytest.raises(HeedfulError, match="--attention 'flash'"):
        path_for("flash", torch.device("cpu"))
