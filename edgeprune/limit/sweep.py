"""L1-regularised training and the *actual* pruning limit: global one-shot magnitude pruning
over conv and linear weights (unstructured, no fine-tuning: the paper's setting), swept over
the pruned fraction until the test metric leaves its tolerance."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..train import evaluate
from .slq import PRUNABLE, prunable_weights


class L1Penalty:
    """``lam * sum |p|`` over the weights and biases of conv and linear layers (BatchNorm excluded).

    A training hook: ``loss(model, x, y, step)`` returns the term; calling the object is the same,
    so it can be passed as ``train(..., extra_loss=L1Penalty(1e-4))``.
    """

    def __init__(self, lam: float):
        if lam < 0:
            raise ValueError(f"L1 strength must be >= 0, got {lam}")
        self.lam = float(lam)

    def loss(self, model: nn.Module, x=None, y=None, step: int = 0) -> torch.Tensor:
        terms = [p.abs().sum() for m in model.modules() if isinstance(m, PRUNABLE)
                 for p in (m.weight, m.bias) if p is not None]
        return self.lam * torch.stack(terms).sum() if terms else torch.zeros(())

    def __call__(self, model, x, y, step):
        return self.loss(model, x, y, step)


class GlobalMagnitude:
    """Zero the ``floor(s * D)`` smallest-magnitude prunable weights of ``model`` (in place, restorable)."""

    def __init__(self, model: nn.Module):
        self.params = [p for _, p in prunable_weights(model)]
        self.original = [p.detach().clone() for p in self.params]
        flat = torch.cat([p.reshape(-1) for p in self.original]).abs()
        self.order = torch.argsort(flat, stable=True)  # ascending magnitude
        self.D = len(flat)

    def apply(self, s: float) -> int:
        k = int(np.floor(s * self.D + 1e-9))
        mask = torch.ones(self.D)
        mask[self.order[:k]] = 0
        off = 0
        with torch.no_grad():
            for p, o in zip(self.params, self.original):
                p.copy_(o * mask[off:off + p.numel()].view_as(p))
                off += p.numel()
        return k

    def restore(self) -> None:
        with torch.no_grad():
            for p, o in zip(self.params, self.original):
                p.copy_(o)


def actual_limit(model: nn.Module, x: np.ndarray, y: np.ndarray, *, task: str = "classification",
                 tolerance: float = 1.0, coarse: float = 0.02, fine: float = 0.001, metric: str | None = None) -> dict:
    """The largest pruned fraction (on a ``fine`` grid) before the metric first falls more than
    ``tolerance`` below the dense one: a ``coarse`` scan finds the first failing step, a fine scan
    inside it finds the crossing. The model is restored afterwards."""
    gm = GlobalMagnitude(model)
    curve: dict[float, float] = {}

    def at(s: float) -> float:
        s = round(s, 6)
        if s not in curve:
            gm.apply(s)
            curve[s] = evaluate(model, x, y, task, metric)
        return curve[s]

    try:
        dense = at(0.0)
        floor = dense - tolerance
        n = int(round(1 / coarse))
        last_ok = 0.0
        fail = None
        for i in range(1, n + 1):
            s = i * coarse
            if at(s) < floor:
                fail = s
                break
            last_ok = s
        if fail is not None:
            base, m = last_ok, int(round((fail - last_ok) / fine))
            for i in range(1, m):
                s = base + i * fine
                if at(s) < floor:
                    break
                last_ok = s
        else:
            last_ok = 1.0
    finally:
        gm.restore()
    return {"limit": round(last_ok, 6), "dense_metric": dense, "tolerance": tolerance, "D": gm.D,
            "curve": sorted(curve.items())}
