"""The pruning-ratio threshold of Zhang et al. (NeurIPS 2024, "How Sparse Can We Prune A Deep Network").

* ``epsilon``: the standard deviation of the per-mini-batch training loss (the loss tolerance).
* ``R(s)``: the distance from the trained weights to their one-shot magnitude-pruned copy at
  pruned fraction ``s``: ``sqrt(sum of the s*D smallest w**2)`` over the D prunable weights,
  evaluated at continuous ``s`` (linear interpolation of the cumulative sum between whole
  weights; rounding R to integers, as the authors' script does, breaks small models).
* ``g(R) = sum_j tau_j * 2 eps / (2 eps + |theta_j| R**2)`` over the spectral density
  (theta_j, tau_j) (negative eigenvalues by absolute value), normalised by ``sum tau``.
* The predicted limit ``s*`` solves ``s = g(R(s))``. ``s - g(R(s))`` rises strictly from
  ``-1`` at ``s = 0`` (R grows with s, g falls with R), so bisection finds the one root.
"""

from __future__ import annotations

import numpy as np

from .slq import Density


class RadiusCurve:
    """R(s) of one weight vector, continuous in s."""

    def __init__(self, weights: np.ndarray):
        w2 = np.sort(np.asarray(weights, dtype=np.float64).ravel() ** 2)
        self.D = len(w2)
        self.cum = np.concatenate([[0.0], np.cumsum(w2)])  # cum[k] = sum of the k smallest w**2

    def r2(self, s: float) -> float:
        return float(np.interp(s * self.D, np.arange(self.D + 1), self.cum))

    def __call__(self, s: float) -> float:
        return float(np.sqrt(self.r2(s)))


def g_of_r(r: float, density: Density, eps: float) -> float:
    theta, tau = np.abs(density.nodes), density.weights
    return float(np.sum(tau * 2 * eps / (2 * eps + theta * r * r)) / np.sum(tau))


def with_zero_mass(density: Density, fraction: float) -> Density:
    """The zero-curvature correction: a point mass at 0 holding ``fraction`` of the total
    (the weights whose Hessian row is ~zero, which a few Lanczos steps under-resolve)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"zero-curvature fraction must be in [0, 1), got {fraction}")
    total = float(np.sum(density.weights))
    nodes = np.concatenate([density.nodes, [0.0]])
    weights = np.concatenate([density.weights * (1 - fraction), [fraction * total]])
    return Density(nodes, weights)


def predict_limit(density: Density, eps: float, radius: RadiusCurve, *, tol: float = 1e-7) -> float:
    """s* with s* = g(R(s*)), by bisection on [0, 1]."""
    if not eps > 0:
        raise ValueError(f"epsilon (the loss spread) must be > 0, got {eps}")
    f = lambda s: s - g_of_r(radius(s), density, eps)  # noqa: E731
    lo, hi = 0.0, 1.0
    if f(hi) <= 0:
        return 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if f(mid) > 0:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def batch_loss_std(model, x: np.ndarray, y: np.ndarray, *, task: str = "classification", batch_size: int = 64) -> float:
    """epsilon: the (population) standard deviation of the task loss over consecutive mini-batches."""
    import torch

    from ..train import task_loss

    model.eval()
    losses = []
    with torch.no_grad():
        for i in range(0, len(x) - batch_size + 1, batch_size):  # full batches only: a short tail is noisier
            xb, yb = torch.from_numpy(x[i:i + batch_size]), torch.from_numpy(y[i:i + batch_size])
            losses.append(float(task_loss(task, model(xb), xb, yb)))
    if len(losses) < 2:
        raise ValueError(f"need at least 2 mini-batches of {batch_size} to measure the loss spread, got {len(x)} samples")
    return float(np.std(losses))
