"""How far can it be pruned: the pruning-limit estimator of Zhang et al. (NeurIPS 2024) and the build guard.

slq: Hessian-vector products and stochastic Lanczos quadrature; threshold: epsilon, R(s), g(R), s*;
estimate: one call from model + data to s*; sweep: L1 training hook, global one-shot magnitude pruning
and the actual limit; guard: the check `build` runs before spending the pruning budget; cli: `edgeprune limit`.
"""

from .estimate import GUARD_SETTINGS, LimitEstimate, LimitSettings, estimate_limit
from .sweep import GlobalMagnitude, L1Penalty, actual_limit

__all__ = ["GUARD_SETTINGS", "GlobalMagnitude", "L1Penalty", "LimitEstimate", "LimitSettings", "actual_limit",
           "estimate_limit"]
