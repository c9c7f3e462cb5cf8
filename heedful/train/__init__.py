"""Training the embedded gated model: corpus, tokenizer, models, loop.

DEFAULT_MODEL_DIR is where the shipped gated model lives inside the package (it is what
heedful.loading uses when no --model is given)."""

from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "default_model"

__all__ = ["DEFAULT_MODEL_DIR"]
