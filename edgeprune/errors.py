"""Errors that carry a one-line message for the user.

The CLI turns any :class:`EdgepruneError` into that line on stderr and the error's
``exit_code``; everything else is a bug and keeps its traceback. Exit codes: 1 internal error or failed
verification, 2 bad input, 3 the budget failed (set by the pipeline), 4 an artifact failed to export,
5 the budget is out of reach for pruning (:class:`OutOfReachError`).
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


class OutOfReachError(EdgepruneError):
    """The target's budget cannot be met by pruning this model: the runtime's fixed overhead alone exceeds it,
    or the accuracy floor breaks before the budget is met (``build --search``). Exit code 5."""

    exit_code = 5
