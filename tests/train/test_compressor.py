"""Fold compressors: training's one-forward fold attention equals the engine streaming token by
token, the learned pooling starts as the mean, training lowers the loss, folders round-trip,
and sessions pick a compressor by --fold-compressor (auto: the model folder's own)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import heedful.cli
from heedful.app.open import session_for
from heedful.errors import HeedfulError
from heedful.selector.compressor import FOLDER, LearnedPool, MeanPool, load_compressor, model_sizes
from heedful.train.compressor import FoldPattern, fold_logits, fold_loss, token_rows, train
from tests.tiny_models import CORPUS, moved_compressor
from tests.rows import summaries


def _noisy(lm, block, seed=0):
    return moved_compressor(model_sizes(lm.model), block, seed)


def _stream(lm, ids, W, R, Fb, compressor=None, **kw):
    """The engine's next-token logits after each token of ids, fed one per step."""
    s = session_for(lm, window=W, budget=W + R, fold_budget=R, fold_block=Fb, prefill_chunk=1, **kw)
    if compressor is not None:
        s.residency.autofold.compressor = compressor
    out = []
    for t in ids:
        s.feed([t], "prompt")
        out.append(s.next_logits.clone())
    return torch.stack(out), s


@pytest.mark.parametrize("kind", ["mean", "learned"])
@pytest.mark.parametrize("W,R,Fb", [(8, 3, 4), (5, 6, 3)])
def test_fold_logits_equal_the_engine_token_by_token(tiny_qwen35, kind, W, R, Fb):
    ids = tiny_qwen35.tokenizer(CORPUS)["input_ids"][:70]
    comp = MeanPool() if kind == "mean" else _noisy(tiny_qwen35, Fb)
    with torch.no_grad():
        ref = fold_logits(tiny_qwen35.model, torch.tensor([ids]), FoldPattern(W, R, Fb), comp)[0]
    got, s = _stream(tiny_qwen35, ids, W, R, Fb, comp)
    assert summaries(s) == R  # summaries were in play, R of them
    torch.testing.assert_close(got, ref.float(), atol=2e-4, rtol=1e-4)
    # and the summaries matter: the same stream without them differs
    plain = fold_logits(tiny_qwen35.model, torch.tensor([ids]), FoldPattern(W, 0, Fb))[0]
    assert (plain[-1] - ref[-1]).abs().max() > 1e-3


def test_learned_pool_starts_as_the_mean():
    c, m = LearnedPool(layers=2, heads=2, head_dim=8, block=4), MeanPool()
    k, v = torch.randn(1, 2, 3, 4, 8), torch.randn(1, 2, 3, 4, 8)
    present = torch.tensor([[True] * 4, [True, False, True, False], [False, False, False, True]])
    for mask in (None, present):
        for a, b in zip(c.pool(1, k, v, mask), m.pool(1, k, v, mask)):
            torch.testing.assert_close(a, b)
    assert torch.allclose(m.pool(0, k, v, present)[0][0, 0, 1], k[0, 0, 1, [0, 2]].mean(0))


def test_a_share_of_the_heads_pools_as_the_whole_does():
    """A tensor-parallel rank keeps its heads' parameters (select_heads): its summaries are the
    whole compressor's for those heads."""
    c = moved_compressor({"layers": 2, "heads": 4, "head_dim": 8}, block=4, seed=5, scale=0.3)
    k, v = torch.randn(1, 4, 3, 4, 8), torch.randn(1, 4, 3, 4, 8)
    whole, part = c.pool(1, k, v), c.select_heads(2, 4).pool(1, k[:, 2:4], v[:, 2:4])
    for a, b in zip(part, whole):
        torch.testing.assert_close(a, b[:, 2:4])


def test_training_lowers_the_fold_loss(tiny_qwen35):
    rows = token_rows(tiny_qwen35.tokenizer, CORPUS * 3, 48)
    pattern = FoldPattern(8, 4, 4)
    before = fold_loss(tiny_qwen35.model, rows, pattern, MeanPool()).item()
    comp, record = train(tiny_qwen35.model, tiny_qwen35.tokenizer, pattern, train_rows=rows, eval_rows=rows[:4],
                         steps=25, batch=4, lr=1e-2)
    after = fold_loss(tiny_qwen35.model, rows, pattern, comp).item()
    assert after < before - 0.05, (before, after)
    assert record["eval_loss"]["mean"] > record["eval_loss"]["learned"]
    assert not any(p.requires_grad for p in tiny_qwen35.model.parameters())  # the model stayed frozen
    assert not any(p.requires_grad for p in comp.parameters())


def test_folder_round_trip_and_its_errors(tiny_qwen35, tmp_path):
    sizes = model_sizes(tiny_qwen35.model)
    c = _noisy(tiny_qwen35, 4)
    c.save(tmp_path / "c", {"steps": 3})
    back = load_compressor(tmp_path / "c", **sizes, block=4)
    for (name, a), (_, b) in zip(c.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name
    assert json.loads((tmp_path / "c" / "compressor.json").read_text())["trained"] == {"steps": 3}
    with pytest.raises(HeedfulError, match="pools blocks of 4 tokens, the session's --fold-block is 8"):
        load_compressor(tmp_path / "c", **sizes, block=8)
    with pytest.raises(HeedfulError, match="made for"):
        load_compressor(tmp_path / "c", **{**sizes, "layers": sizes["layers"] + 1}, block=4)
    with pytest.raises(HeedfulError, match="not a compressor folder"):
        load_compressor(tmp_path, **sizes, block=4)
    with pytest.raises(HeedfulError, match="auto: resolve it"):
        load_compressor("auto", **sizes, block=4)
    (tmp_path / "c" / "compressor.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(HeedfulError, match="compressor.safetensors"):
        load_compressor(tmp_path / "c", **sizes, block=4)


def test_sessions_choose_the_compressor(tiny_qwen35, tiny_qwen35_dir, tmp_path, capsys):
    ids = tiny_qwen35.tokenizer(CORPUS)["input_ids"][:40]
    c = _noisy(tiny_qwen35, 4)
    c.save(tmp_path / "c")
    direct, _ = _stream(tiny_qwen35, ids, 8, 3, 4, c)
    by_path, s = _stream(tiny_qwen35, ids, 8, 3, 4, fold_compressor=str(tmp_path / "c"))
    torch.testing.assert_close(by_path, direct)
    assert s.config.fold_compressor == str((tmp_path / "c").resolve())
    mean, s = _stream(tiny_qwen35, ids, 8, 3, 4, fold_compressor="mean")
    assert s.config.fold_compressor == "mean" and (mean - direct).abs().max() > 1e-3
    # auto: the model folder's own compressor, when it pools blocks of the session's size
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_qwen35_dir, model_dir)
    c.save(model_dir / FOLDER)
    from heedful.models.loading import load_model

    lm = load_model(str(model_dir), dtype="float32", device="cpu")
    auto = session_for(lm, window=8, budget=11, fold_budget=3, fold_block=4)
    assert auto.config.fold_compressor == str((model_dir / FOLDER).resolve())
    other = session_for(lm, window=8, budget=11, fold_budget=3, fold_block=5)
    assert other.config.fold_compressor == "mean"
    assert "pools blocks of 4 tokens, not --fold-block 5: summaries are means" in capsys.readouterr().err
    with pytest.raises(HeedfulError, match="--fold-block is 5"):
        session_for(lm, window=8, budget=11, fold_budget=3, fold_block=5, fold_compressor=str(model_dir / FOLDER))


def test_cli_trains_a_compressor_and_generate_uses_it(tiny_qwen35_dir, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(CORPUS * 2)
    out = tmp_path / "comp"
    with pytest.raises(SystemExit) as e:
        heedful.cli.main(["train", "compressor", "--model", str(tiny_qwen35_dir), "--out", str(out), "--text",
                          str(text), "--no-synthetic", "--eval-text", str(text), "--window", "8", "--fold-rows",
                          "4", "--fold-block", "4", "--seq-len", "32", "--steps", "3", "--batch", "2", "--json"])
    res = capsys.readouterr()
    assert e.value.code == 0, res.err
    record = json.loads(res.out.splitlines()[-1])
    assert set(record["ppl"]) == {"full", "window", "mean", "learned", "learned_other_text"}
    assert (out / "compressor.safetensors").is_file() and record["steps"] == 3
    db = tmp_path / "s.db"
    with pytest.raises(SystemExit) as e:
        heedful.cli.main(["generate", "The vault code is", "--model", str(tiny_qwen35_dir), "-n", "30",
                          "--window", "8", "--budget", "12", "--fold-budget", "4", "--fold-block", "4",
                          "--fold-compressor", str(out), "--db", str(db), "--json"])
    res = capsys.readouterr()
    assert e.value.code == 0, res.err
    fold = json.loads(res.out.splitlines()[-1])["fold"]
    assert fold["compressor"] == str(out.resolve()) and fold["block"] == 4 and 0 < fold["summary_rows"] <= 4
    from heedful.store import Store

    assert Store.open(str(db), create=False).load(None).info.config["fold_compressor"] == str(out.resolve())
    with pytest.raises(SystemExit) as e:
        heedful.cli.main(["generate", "x", "--model", str(tiny_qwen35_dir), "-n", "2", "--window", "8",
                          "--budget", "12", "--fold-budget", "4", "--fold-block", "4", "--fold-compressor",
                          str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "not a compressor folder" in err


def test_sessions_record_the_compressors_digest_and_replays_check_it(tiny_qwen35, tiny_qwen35_dir, tmp_path):
    """The config records the weights' sha256: a replay with other weights at that path is
    refused; a recorded folder that is gone (another install) is the model's own when that
    has the recorded digest; a script may say "auto"."""
    import os

    from heedful.app.open import resolve_fold_settings
    from heedful.selector.compressor import digest

    c = _noisy(tiny_qwen35, 4)
    c.save(tmp_path / "c")
    assert os.stat(tmp_path / "c" / "compressor.safetensors").st_mode & 0o644 == 0o644
    s = session_for(tiny_qwen35, window=8, budget=11, fold_budget=3, fold_block=4, fold_compressor=str(tmp_path / "c"))
    recorded = s.config.to_dict()
    assert recorded["fold_compressor_digest"] == digest(tmp_path / "c") and len(recorded["fold_compressor_digest"]) == 16
    _noisy(tiny_qwen35, 4, seed=9).save(tmp_path / "c")  # retrained in place
    with pytest.raises(HeedfulError, match="not the compressor the session was recorded with"):
        session_for(tiny_qwen35, **{k: v for k, v in recorded.items() if k != "model"})
    # the model's own folder holds the recorded weights; the recorded path is gone
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_qwen35_dir, model_dir)
    c.save(model_dir / FOLDER)
    from heedful.models.loading import load_model

    lm = load_model(str(model_dir), dtype="float32", device="cpu")
    moved = {**recorded, "fold_compressor": str(tmp_path / "gone")}
    assert resolve_fold_settings(lm, moved)["fold_compressor"] == str((model_dir / FOLDER).resolve())
    assert resolve_fold_settings(lm, {**recorded, "fold_compressor": "auto"})["fold_compressor"] == \
        str((model_dir / FOLDER).resolve())
    with pytest.raises(HeedfulError, match="only with --fold-budget"):
        resolve_fold_settings(lm, {"fold_budget": 0, "fold_compressor": str(tmp_path / "c")})
    assert "fold_compressor" not in resolve_fold_settings(lm, {"fold_budget": 0, "fold_compressor": "mean"})


def test_bad_compressor_files_are_refused_in_one_line(tiny_qwen35, tmp_path, capsys):
    import json as _json

    from heedful.models.loading import load_model

    sizes = model_sizes(tiny_qwen35.model)
    c = LearnedPool(**sizes, block=4)
    with torch.no_grad():
        c.proj_k[0, 0, 0, 0] = float("nan")
    c.save(tmp_path / "nan")
    with pytest.raises(HeedfulError, match="NaN or infinite"):
        load_compressor(tmp_path / "nan", **sizes, block=4)
    LearnedPool(**{**sizes, "head_dim": sizes["head_dim"] * 2}, block=4).save(tmp_path / "shape")
    meta = _json.loads((tmp_path / "shape" / "compressor.json").read_text())
    (tmp_path / "shape" / "compressor.json").write_text(_json.dumps({**meta, "head_dim": sizes["head_dim"]}))
    with pytest.raises(HeedfulError, match="size mismatch") as e:
        load_compressor(tmp_path / "shape", **sizes, block=4)
    assert "\n" not in str(e.value)
    (tmp_path / "shape" / "compressor.json").write_text(_json.dumps({**meta, "block": 4.5}))
    with pytest.raises(HeedfulError, match="positive integers"):
        load_compressor(tmp_path / "shape", **sizes, block=4)
    # a model's own compressor.json that cannot be read: auto says so and uses the mean
    model_dir = tmp_path / "model"
    shutil.copytree(Path(tiny_qwen35.name), model_dir)
    (model_dir / FOLDER).mkdir()
    (model_dir / FOLDER / "compressor.json").write_text("{not json")
    lm = load_model(str(model_dir), dtype="float32", device="cpu")
    assert session_for(lm, window=8, budget=11, fold_budget=3, fold_block=4).config.fold_compressor == "mean"
    assert "unreadable" in capsys.readouterr().err


def test_train_compressor_refuses_before_training(tiny_qwen35_dir, tmp_path, capsys):
    """--out that cannot be a folder, a row too short for any summary, the held-out seed: one
    line, exit 2, before any step."""
    (tmp_path / "afile").write_text("x")
    base = ["train", "compressor", "--model", str(tiny_qwen35_dir), "--steps", "1", "--batch", "1",
            "--window", "8", "--fold-rows", "4", "--fold-block", "4"]
    cases = [(["--out", str(tmp_path / "afile" / "sub"), "--seq-len", "32"], "--out"),
             (["--out", str(tmp_path / "o"), "--seq-len", "12"], "no token would see a summary"),
             (["--out", str(tmp_path / "o"), "--seq-len", "32", "--seed", "12344"], "held-out text")]
    for extra, match in cases:
        with pytest.raises(SystemExit) as e:
            heedful.cli.main([*base, *extra])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and match in err, err
        assert not (tmp_path / "o" / "compressor.json").exists()


def test_the_control_never_pairs_a_row_with_itself(tiny_qwen35):
    """learned_other_text swaps blocks between rows: a batch of one would read its own blocks
    (the control equal to learned), so batches keep two rows at least."""
    from heedful.train.compressor import evaluate

    rows = token_rows(tiny_qwen35.tokenizer, CORPUS * 3, 40)[:3]
    comp = _noisy(tiny_qwen35, 4)
    r = evaluate(tiny_qwen35.model, rows, FoldPattern(8, 4, 4), comp, batch=2)
    assert r["learned_other_text"] != pytest.approx(r["learned"], abs=1e-6)
    assert evaluate(tiny_qwen35.model, rows[:1], FoldPattern(8, 4, 4), comp)["learned_other_text"] is None
