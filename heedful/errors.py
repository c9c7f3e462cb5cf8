"""Errors a user can cause. The CLI turns each into a one-line message and exit code 2."""


class HeedfulError(Exception):
    """Bad input: the message is one line that names the file, line or argument at fault."""

    exit_code = 2


class ModelLoadError(HeedfulError):
    """A model path, id, config or architecture that heedful cannot load."""


class TargetError(HeedfulError):
    """A pin/unpin/drop/recall target that does not resolve: text not found, bad range."""


class BudgetError(HeedfulError):
    """A window/budget setting or a pin that the KV budget cannot hold."""
