"""Whether Triton can be used here. heedful.kernels imports without it (CPU installs,
machines where triton fails to import) and falls back to the PyTorch references."""

from __future__ import annotations

import os

try:  # noqa: SIM105
    import triton  # noqa: F401

    HAS_TRITON = True
except Exception:  # pragma: no cover - depends on the install
    HAS_TRITON = False


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def pick_backend(device, backend: str | None) -> str:
    """None: Triton on CUDA, the reference elsewhere. HEEDFUL_KERNELS=reference forces the
    reference (debugging); backend="triton" forces Triton (CPU needs TRITON_INTERPRET=1)."""
    forced = os.environ.get("HEEDFUL_KERNELS", "").strip().lower()
    choice = backend or (forced if forced in ("reference", "triton") else None)
    if choice is None:
        choice = "triton" if HAS_TRITON and device.type == "cuda" else "reference"
    if choice == "triton":
        if not HAS_TRITON:
            raise RuntimeError("heedful.kernels: backend 'triton' asked for, but triton cannot be imported")
        if device.type != "cuda" and not interpreting():
            raise RuntimeError("heedful.kernels: Triton on CPU needs TRITON_INTERPRET=1")
    elif choice != "reference":
        raise ValueError(f"heedful.kernels: unknown backend {choice!r} (expected 'triton' or 'reference')")
    return choice
