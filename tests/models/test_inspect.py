"""inspect on a hand-built gated model whose attention all goes to token 0."""

from __future__ import annotations

import json

import pytest
import torch


def sink_model(tmp_path):
    """Qwen3.5, all layers full attention. Token id 0 is the only one with a nonzero key
    (in a dimension RoPE leaves alone), every query points there with a large norm, so each
    query puts ~all of its attention on token 0. Gate rows are zero: sigmoid(0) = 0.5.
    o_proj and the MLP are zero, so every layer sees the embeddings."""
    from transformers.models.qwen3_5 import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    from tests.tiny_models import build_tokenizer

    tok = build_tokenizer(tmp_path)
    H, D, hidden = 2, 16, 32
    cfg = Qwen3_5TextConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=H, num_key_value_heads=1, head_dim=D,
                            layer_types=["full_attention"] * 2, max_position_embeddings=64,
                            tie_word_embeddings=False)
    m = Qwen3_5ForCausalLM(cfg)
    with torch.no_grad():
        emb = m.model.embed_tokens.weight
        emb.normal_(0, 0.1)
        emb[:, 0] = 0.0
        emb[:, 1] = 1.0
        emb[0, 0] = 1.0  # token id 0 alone has hidden dim 0
        for layer in m.model.layers:
            a = layer.self_attn
            a.q_proj.weight.zero_()
            for h in range(H):
                a.q_proj.weight[h * 2 * D + D - 1, 1] = 1.0  # query: last (unrotated) dim, every token
            a.k_proj.weight.zero_()
            a.k_proj.weight[D - 1, 0] = 1.0  # key: only token id 0
            a.q_norm.weight.fill_(9.0)  # (1 + w) scaling: score sqrt(D) * 10 * 10 = 400
            a.k_norm.weight.fill_(9.0)
            a.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    m.save_pretrained(tmp_path, safe_serialization=True)
    return tmp_path


@pytest.fixture(scope="module")
def sink_dir(tmp_path_factory):
    return sink_model(tmp_path_factory.mktemp("sink"))


def test_first_token_share_is_one(sink_dir):
    from heedful.models.inspect import diagnose
    from heedful.models.loading import load_model

    lm = load_model(str(sink_dir), dtype="float32", device="cpu")
    ids = torch.tensor([[0] + list(range(5, 25))])
    d = diagnose(lm.model, ids)
    assert len(d.layers) == 2
    assert d.first_token_share == pytest.approx(1.0, abs=1e-6)
    assert all(x.first_token_share == pytest.approx(1.0, abs=1e-6) for x in d.layers)
    assert d.mean_gate == pytest.approx(0.5) and all(x.mean_gate == pytest.approx(0.5) for x in d.layers)
    emb = lm.model.model.embed_tokens.weight.detach()[ids[0]]
    assert d.max_activation == pytest.approx(float(emb.abs().max()), rel=1e-5)
    # the model's own attention implementation is put back
    assert lm.model.config._attn_implementation == "heedful"


def test_ungated_has_no_gate_and_share_below_one(tiny_llama):
    from heedful.models.inspect import diagnose_text

    d = diagnose_text(tiny_llama.model, tiny_llama.tokenizer, "The vault code is 4821. Remember it.")
    assert d.mean_gate is None and all(x.mean_gate is None for x in d.layers)
    assert d.uniform_share == sum(1 / (q + 1) for q in range(1, d.tokens)) / (d.tokens - 1)
    assert 0.0 < d.first_token_share < 1.0


def test_inspect_cli(sink_dir, tmp_path):
    from click.testing import CliRunner

    from heedful.cli.inspect import inspect

    r = CliRunner().invoke(inspect, ["--model", str(sink_dir), "--device", "cpu", "--dtype", "float32", "--json",
                                     "The vault code is 4821."])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["gated"] and len(out["layers"]) == 2 and out["mean_gate"] == pytest.approx(0.5)
    f = tmp_path / "t.txt"
    f.write_text("Alice met Bob at the station.")
    r = CliRunner().invoke(inspect, ["--model", str(sink_dir), "--device", "cpu", "--file", str(f)])
    assert r.exit_code == 0 and "first-token share" in r.output
