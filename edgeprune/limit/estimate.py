"""One call from a trained model and its training data to the predicted pruning limit s*."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .slq import hessian_density, prunable_weights
from .threshold import RadiusCurve, batch_loss_std, predict_limit, with_zero_mass


@dataclass
class LimitSettings:
    """How the estimate is computed. ``samples``: training samples the Hessian is averaged over
    (a seeded random subset; 0 = all); epsilon always uses the whole training set."""

    steps: int = 96
    vectors: int = 4
    samples: int = 2048
    batch_size: int = 64
    zero_mass: bool = False
    seed: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


#: the build guard's cheap default (quickstart: a few seconds); `edgeprune limit` uses LimitSettings()
GUARD_SETTINGS = dict(steps=32, vectors=2, samples=256)


@dataclass
class LimitEstimate:
    s_star: float
    epsilon: float
    D: int
    zero_fraction: float
    density: dict
    settings: dict
    seconds: dict = field(default_factory=dict)
    hvps: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def zero_curvature_fraction(model: nn.Module, x: np.ndarray, y: np.ndarray, task: str, batch_size: int = 64) -> float:
    """Fraction of prunable weights whose mini-batch gradient is zero on every batch of (x, y)
    (e.g. first-layer weights of always-blank pixels, inputs of dead units): their Hessian rows vanish."""
    from ..train import task_loss

    params = [p for _, p in prunable_weights(model)]
    acc = [torch.zeros_like(p) for p in params]
    model.eval()
    for i in range(0, len(x), batch_size):
        xb, yb = torch.from_numpy(x[i:i + batch_size]), torch.from_numpy(y[i:i + batch_size])
        grads = torch.autograd.grad(task_loss(task, model(xb), xb, yb), params, materialize_grads=True)
        for a, g in zip(acc, grads):
            a += g.abs()
    flat = torch.cat([a.reshape(-1) for a in acc])
    return float((flat <= 1e-12 * max(float(flat.max()), 1e-30)).float().mean())


def estimate_limit(model: nn.Module, x_train: np.ndarray, y_train: np.ndarray, *, task: str = "classification",
                   settings: LimitSettings | None = None) -> LimitEstimate:
    st = settings or LimitSettings()
    t0 = time.perf_counter()
    eps = batch_loss_std(model, x_train, y_train, task=task, batch_size=st.batch_size)
    t1 = time.perf_counter()
    if st.samples and st.samples < len(x_train):
        idx = np.sort(np.random.default_rng(st.seed).choice(len(x_train), st.samples, replace=False))
        xs, ys = x_train[idx], y_train[idx]
    else:
        xs, ys = x_train, y_train
    dens, hvps = hessian_density(model, xs, ys, task=task, steps=st.steps, n_vectors=st.vectors, seed=st.seed)
    t2 = time.perf_counter()
    zero = zero_curvature_fraction(model, xs, ys, task, st.batch_size)
    if st.zero_mass and zero > 0:
        dens = with_zero_mass(dens, zero)
    w = torch.cat([p.detach().reshape(-1) for _, p in prunable_weights(model)]).double().numpy()
    s_star = predict_limit(dens, eps, RadiusCurve(w))
    t3 = time.perf_counter()
    return LimitEstimate(s_star=s_star, epsilon=eps, D=len(w), zero_fraction=zero, density=dens.to_dict(),
                         settings=st.to_dict(), hvps=hvps,
                         seconds={"epsilon": t1 - t0, "slq": t2 - t1, "threshold": t3 - t2, "total": t3 - t0})
