"""Pruning methods, one module each, registered by name."""

from . import complexity_aware  # noqa: F401  (registers complexity-aware)
from . import magnitude  # noqa: F401  (registers l1, l2)
from . import pl_gates  # noqa: F401  (registers pl-gates)
from . import soft_coef  # noqa: F401  (registers soft-coef)
from . import tp  # noqa: F401  (registers tp-l1, tp-l2, tp-taylor, tp-groupnorm, tp-random)
from .base import (METHODS, FitContext, MethodResult, PruningMethod, get_method, list_methods, method_info,
                   register_method)

__all__ = ["METHODS", "FitContext", "MethodResult", "PruningMethod", "get_method", "list_methods", "method_info",
           "register_method"]
