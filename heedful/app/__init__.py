"""What both the CLI and the TUI use: opening and resuming sessions (open.py), the replay-script
format (script.py) and running scripts (replay.py). Nothing is imported here, so that the CLI's
options (options.py) load without torch: `heedful --help` stays fast."""


def __getattr__(name):  # `from heedful.app import open_session` imports open.py (torch) only then
    if name in ("open_session", "resume"):
        from heedful.app import open as _open

        return getattr(_open, name)
    raise AttributeError(f"module 'heedful.app' has no attribute {name!r}")
