"""Errors that carry a one-line message for the user.

The CLI turns any :class:`EdgepruneError` into that line on stderr and the error's
``exit_code``; everything else is a bug and keeps its traceback.
"""


class EdgepruneError(Exception):
    """Bad input or an impossible request: message names the problem and the fix."""

    exit_code = 2


class ConfigError(EdgepruneError):
    """A broken or inconsistent configuration (file, key, value)."""


class InputError(EdgepruneError):
    """A missing or unreadable input: dataset directory, model file, run folder, target."""


class UnsupportedModelError(EdgepruneError):
    """The model uses a pattern the surgery cannot handle exactly (names module and op)."""


class VerificationError(EdgepruneError):
    """A compacted or exported model does not match its reference: a bug, never hidden."""

    exit_code = 1
