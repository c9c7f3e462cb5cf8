"""The wheel holds every package of the source tree (mapped under heedful.*) and the
embedded model: an editable install would hide a package missing from pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = {"heedful": "heedful", "selector": "heedful/selector", "heedful/kernels": "heedful/kernels",
         "store": "heedful/store", "tui": "heedful/tui"}


def test_wheel_contains_every_package_and_the_model(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("heedful-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for folder, prefix in PARTS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.relative_to(ROOT / folder).as_posix()
            expected.add(f"{prefix}/{rel}")
    missing = sorted(expected - names)
    assert not missing, f"not in the wheel: {missing}"
    assert not any(n.startswith(("kernels/", "store/", "tui/", "selector/")) for n in names), "top-level modules"
    if (ROOT / "heedful/models/default_model/config.json").exists():
        assert "heedful/models/default_model/model.safetensors" in names
    for f in (ROOT / "heedful/models/default_model/fold_compressor").glob("*"):
        assert f"heedful/models/default_model/fold_compressor/{f.name}" in names
