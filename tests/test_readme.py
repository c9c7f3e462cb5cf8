"""The README's Python example runs as written, with the embedded model (offline)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from heedful.models.loading import default_model_dir

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.skipif(default_model_dir() is None, reason="no embedded default model in this build")
def test_the_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no Python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    s = namespace["s"]
    assert len(s) >= 40 and s.stats().peak_resident <= 128
    assert "Stats(" in capsys.readouterr().out  # the streamed text, then the stats
