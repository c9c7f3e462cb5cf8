"""`heedful bench retention` end to end on a tiny model: table, PNG, one line per policy."""

from __future__ import annotations

import json

import pytest

from heedful.cli import main


def test_bench_retention_writes_table_and_plot(tiny_qwen35_dir, tmp_path, capsys):
    png = tmp_path / "r.png"
    with pytest.raises(SystemExit) as e:
        main(["bench", "retention", "--model", str(tiny_qwen35_dir), "--budgets", "24,40", "--episodes", "2",
              "--filler", "2", "--png", str(png), "--json", "--dtype", "float32"])
    out, err = capsys.readouterr()
    assert e.value.code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads(out.strip().splitlines()[-1])[0]
    assert set(res["accuracy"]) == {"full", "window", "sinks+window", "h2o", "topk", "pins", "pins+topk"}
    assert all(0.0 <= a <= 1.0 for accs in res["accuracy"].values() for a in accs.values())
    for policy in res["accuracy"]:
        assert policy in out


def test_bench_retention_rejects_unknown_policies(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "retention", "--policies", "full,nope"])
    assert e.value.code == 2 and "nope" in capsys.readouterr().err


def _accuracy(capsys, tmp_path, model_dir, budgets: str, episodes: int, filler: int, policies: str) -> dict:
    """Runs `heedful bench retention --json` (float32); the first model's accuracy table."""
    with pytest.raises(SystemExit) as e:
        main(["bench", "retention", "--model", str(model_dir), "--budgets", budgets, "--episodes", str(episodes),
              "--filler", str(filler), "--policies", policies, "--png", str(tmp_path / "r.png"), "--json",
              "--dtype", "float32"])
    out, err = capsys.readouterr()
    assert e.value.code == 0, err
    return json.loads(out.strip().splitlines()[-1])[0]["accuracy"]


def test_late_recall_and_fold_policies_run(tiny_qwen35_dir, tmp_path, capsys):
    accuracy = _accuracy(capsys, tmp_path, tiny_qwen35_dir, "64", 2, 3, "recall,recall-append,fold,autofold")
    assert set(accuracy) == {"recall", "recall-append", "fold", "autofold"}


def test_autofold_policies_fold_with_the_compressor_named(tiny_qwen35, tmp_path):
    import random

    from heedful.selector.compressor import LearnedPool, MeanPool, model_sizes
    from heedful.train.retention import AUTOFOLD_BLOCK, policy_session, run_episode
    from heedful.train.synthetic import recall_episode

    LearnedPool(**model_sizes(tiny_qwen35.model), block=AUTOFOLD_BLOCK).save(tmp_path / "c")
    ep = recall_episode(random.Random(3), n_facts=2, n_filler=6).to_dict()
    learned = policy_session(tiny_qwen35.model, tiny_qwen35.tokenizer, ep, "autofold", 32, True,
                             fold_compressor=str(tmp_path / "c"))
    mean = policy_session(tiny_qwen35.model, tiny_qwen35.tokenizer, ep, "autofold-mean", 32, True,
                          fold_compressor=str(tmp_path / "c"))
    assert (learned.config.window, learned.config.fold_budget) == (16, 16)
    assert isinstance(learned.residency.autofold.compressor, LearnedPool) and isinstance(mean.residency.autofold.compressor, MeanPool)
    run_episode(tiny_qwen35.model, tiny_qwen35.tokenizer, ep, "autofold", 32, True, max_new=2,
                fold_compressor=str(tmp_path / "c"))


def test_the_fold_policy_folds_the_filler(tiny_qwen35, monkeypatch):
    import random

    from heedful.selector.session import Session
    from heedful.train.retention import run_episode
    from heedful.train.synthetic import recall_episode

    folds = []
    real = Session.fold
    monkeypatch.setattr(Session, "fold", lambda self, *a, **k: folds.append(a) or real(self, *a, **k))
    ep = recall_episode(random.Random(3), n_facts=2, n_filler=4).to_dict()
    run_episode(tiny_qwen35.model, tiny_qwen35.tokenizer, ep, "fold", budget=256, gated=True, max_new=2)
    assert len(folds) == 4  # one gist per filler sentence


def test_topk_variants_name_their_pool_and_scoring(tiny_qwen35):
    import random

    from heedful.train.retention import auto_variant, is_policy, policy_session
    from heedful.train.synthetic import recall_episode

    assert auto_variant("topk") == {} and auto_variant("pins+topk") == {}
    assert auto_variant("topk-fifo-fla") == {"auto_pool": "fifo", "auto_score": "fla"}
    assert auto_variant("pins+topk-minmax") == {"auto_score": "minmax"}
    for bad in ("topk-lru", "topk-fifo-credit", "topk-fla-fla", "topkfifo", "pins", "h2o"):
        assert auto_variant(bad) is None, bad
    assert is_policy("pins") and is_policy("topk-credit") and not is_policy("topk-x")
    ep = recall_episode(random.Random(3), n_facts=2, n_filler=4).to_dict()
    s = policy_session(tiny_qwen35.model, tiny_qwen35.tokenizer, ep, "topk-fifo-fla", 40, True)
    assert (s.config.auto_topk, s.config.auto_pool, s.config.auto_score) == (2, "fifo", "fla")
    assert type(s.policy).__name__ == "RetentionPolicy"
    s = policy_session(tiny_qwen35.model, tiny_qwen35.tokenizer, ep, "pins+topk", 40, True)
    assert (s.config.auto_pool, s.config.auto_score) == ("credit", "minmax")  # the session's defaults


def test_bench_retention_runs_topk_variants_and_refuses_unknown_ones(tiny_qwen35_dir, tmp_path, capsys):
    accuracy = _accuracy(capsys, tmp_path, tiny_qwen35_dir, "40", 1, 2, "topk-fifo,topk-credit-fla")
    assert set(accuracy) == {"topk-fifo", "topk-credit-fla"}
    with pytest.raises(SystemExit) as e:
        main(["bench", "retention", "--policies", "topk-lru"])
    assert e.value.code == 2 and "topk-lru" in capsys.readouterr().err
