"""Pruning methods, one module each, registered by name."""

from . import magnitude  # noqa: F401  (registers l1, l2)
from . import pl_gates  # noqa: F401  (registers pl-gates)
from . import tp  # noqa: F401  (registers tp-l1, tp-l2, tp-taylor, tp-groupnorm, tp-random)
from .base import METHODS, FitContext, MethodResult, PruningMethod, get_method, list_methods, register_method

__all__ = ["METHODS", "FitContext", "MethodResult", "PruningMethod", "get_method", "list_methods", "register_method"]
