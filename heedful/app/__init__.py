"""What both the CLI and the TUI use: opening and resuming sessions (open.py), the replay-script
format (script.py) and running scripts (replay.py)."""

from heedful.app.open import open_session, resume

__all__ = ["open_session", "resume"]
