"""Shared fixtures: tiny models with real configs, saved with save_pretrained and loaded
back through heedful's own loader (the same path as `--model DIR`)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from hypothesis import settings  # noqa: E402

from tests.tiny_models import build_tiny_model  # noqa: E402

# Property tests draw the same examples on every run (CI must not pass or fail by the draw);
# a defect they find is kept as an explicit case. HEEDFUL_HYPOTHESIS=random draws afresh.
settings.register_profile("fixed", derandomize=True)
settings.register_profile("random", derandomize=False)
settings.load_profile(os.environ.get("HEEDFUL_HYPOTHESIS", "fixed"))


@pytest.fixture(scope="session")
def tiny_qwen35_dir(tmp_path_factory):
    """Gated Qwen3.5 text model, every layer full attention."""
    return build_tiny_model(tmp_path_factory.mktemp("qwen35"), "qwen3_5")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """Ungated Llama-style model."""
    return build_tiny_model(tmp_path_factory.mktemp("llama"), "llama")


@pytest.fixture(scope="session")
def tiny_qwen35_short_dir(tmp_path_factory):
    """Gated model with max_position_embeddings=128, for unbounded continuation."""
    return build_tiny_model(tmp_path_factory.mktemp("qwen35short"), "qwen3_5", max_positions=128)


@pytest.fixture(scope="session")
def tiny_chat_dir(tmp_path_factory):
    """Gated Qwen3.5 model whose tokenizer has a ChatML chat template (tests/tiny_models.py CHATML)."""
    return build_tiny_model(tmp_path_factory.mktemp("chat"), "qwen3_5", chat=True)


@pytest.fixture(scope="session")
def tiny_chat(tiny_chat_dir):
    from heedful.models.loading import load_model

    return load_model(str(tiny_chat_dir), dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def tiny_qwen35(tiny_qwen35_dir):
    from heedful.models.loading import load_model

    return load_model(str(tiny_qwen35_dir), dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir):
    from heedful.models.loading import load_model

    return load_model(str(tiny_llama_dir), dtype="float32", device="cpu")


@pytest.fixture
def cli(capsys):
    """Runs the heedful CLI in process: returns (exit code, stdout, stderr)."""
    import heedful.cli

    def run(*args):
        with pytest.raises(SystemExit) as e:
            heedful.cli.main([str(a) for a in args])
        out = capsys.readouterr()
        return e.value.code, out.out, out.err

    return run


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run the tests marked slow (deselected by default; tests/attack's long cases)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
