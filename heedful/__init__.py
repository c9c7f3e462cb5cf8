"""heedful: human-in-the-loop selective attention for gated LLMs."""

__version__ = "0.1.0"
