"""heedful serve: an OpenAI-compatible HTTP server over heedful sessions (docs/serve.md)."""
