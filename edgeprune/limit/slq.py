"""Hessian spectrum of the training loss by stochastic Lanczos quadrature (SLQ).

The Hessian is taken with respect to the *prunable* weights only (the weight tensors of
convolution and linear layers: the coordinates the pruning limit is about); biases and
BatchNorm parameters are held fixed. Hessian-vector products use double backprop
(``autograd.grad`` of ``g . v``) on the task loss averaged over a training subset, with the
model in eval mode (BatchNorm uses its running statistics, so the loss is a function of the
weights alone). An L1 penalty has zero curvature almost everywhere, so it does not enter.

SLQ: ``n_vectors`` Rademacher start vectors, ``steps`` Lanczos iterations each with full
re-orthogonalisation; the density is the union of every run's Ritz values (nodes) with the
squared first components of the Ritz vectors (weights) divided by ``n_vectors``, so the
weights sum to 1 and ``sum(w * theta**k)`` estimates ``trace(H**k) / D``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..train import task_loss

PRUNABLE = (nn.Linear, nn.modules.conv._ConvNd)


def prunable_weights(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, weight) of every conv and linear layer: what global magnitude pruning ranks."""
    return [(f"{name}.weight", m.weight) for name, m in model.named_modules()
            if isinstance(m, PRUNABLE) and getattr(m, "weight", None) is not None]


@dataclass
class Density:
    """A spectral density as point masses: ``nodes`` (eigenvalue estimates) and ``weights`` (sum 1)."""

    nodes: np.ndarray
    weights: np.ndarray

    def moment(self, k: int) -> float:
        return float(np.sum(self.weights * self.nodes ** k))

    def to_dict(self) -> dict:
        return {"nodes": self.nodes.tolist(), "weights": self.weights.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Density":
        return cls(np.asarray(d["nodes"], dtype=np.float64), np.asarray(d["weights"], dtype=np.float64))


class HessianOperator:
    """v -> H v for the mean task loss over (x, y), w.r.t. ``params``, in chunks of ``chunk`` samples.

    With ``cache_graph`` the first-order gradient graph of each chunk is built once and reused
    by every product (about 2x faster; memory grows with the subset: use it for small subsets).
    """

    def __init__(self, model: nn.Module, params: list[nn.Parameter], x: np.ndarray, y: np.ndarray, *,
                 task: str = "classification", chunk: int = 1024, cache_graph: bool = True):
        self.model, self.params, self.task = model, params, task
        self.dim = sum(p.numel() for p in params)
        xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
        self.chunks = [(xt[i:i + chunk], yt[i:i + chunk]) for i in range(0, len(xt), chunk)]
        self.n = len(xt)
        self.cache_graph = cache_graph
        self._grads: list | None = None
        self.products = 0

    def _chunk_grads(self, xb, yb):
        loss = task_loss(self.task, self.model(xb), xb, yb) * (len(xb) / self.n)
        # a weight the task loss does not reach (the head of a second output) has a zero gradient
        return torch.autograd.grad(loss, self.params, create_graph=True, materialize_grads=True)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        vs, off = [], 0
        for p in self.params:
            vs.append(v[off:off + p.numel()].view_as(p).to(p.dtype))
            off += p.numel()
        out = torch.zeros(self.dim, dtype=torch.float64)
        if self.cache_graph and self._grads is None:
            self._grads = [self._chunk_grads(xb, yb) for xb, yb in self.chunks]
        for i, (xb, yb) in enumerate(self.chunks):
            grads = self._grads[i] if self.cache_graph else self._chunk_grads(xb, yb)
            dot = sum((g * vv).sum() for g, vv in zip(grads, vs))
            hv = torch.autograd.grad(dot, self.params, retain_graph=self.cache_graph, materialize_grads=True)
            out += torch.cat([h.reshape(-1) for h in hv]).double()
        self.products += 1
        return out

    def release(self) -> None:
        self._grads = None


def lanczos(matvec, dim: int, steps: int, v0: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` Lanczos iterations from ``v0`` with full re-orthogonalisation; returns the
    tridiagonal's eigenvalues (Ritz values) and the squared first components of its eigenvectors."""
    steps = min(steps, dim)
    q = v0.double() / torch.linalg.norm(v0.double())
    basis = [q]
    alphas, betas = [], []
    for j in range(steps):
        w = matvec(basis[-1])
        a = float(torch.dot(w, basis[-1]))
        alphas.append(a)
        Q = torch.stack(basis)
        w = w - Q.T @ (Q @ w)  # full re-orthogonalisation (twice is enough in floating point)
        w = w - Q.T @ (Q @ w)
        b = float(torch.linalg.norm(w))
        if j == steps - 1 or b < 1e-10 * max(1.0, abs(a)):
            break
        betas.append(b)
        basis.append(w / b)
    T = np.diag(alphas) + np.diag(betas[:len(alphas) - 1], 1) + np.diag(betas[:len(alphas) - 1], -1)
    evals, evecs = np.linalg.eigh(T)
    return evals, evecs[0, :] ** 2


def slq_density(matvec, dim: int, *, steps: int = 96, n_vectors: int = 4, seed: int = 0) -> Density:
    """The averaged SLQ density of the symmetric operator ``matvec`` (Rademacher start vectors)."""
    g = torch.Generator().manual_seed(seed)
    nodes, weights = [], []
    for _ in range(n_vectors):
        v0 = torch.randint(0, 2, (dim,), generator=g, dtype=torch.float64) * 2 - 1
        ev, w = lanczos(matvec, dim, steps, v0)
        nodes.append(ev)
        weights.append(w / n_vectors)
    return Density(np.concatenate(nodes), np.concatenate(weights))


def hessian_density(model: nn.Module, x: np.ndarray, y: np.ndarray, *, task: str = "classification",
                    steps: int = 96, n_vectors: int = 4, seed: int = 0, chunk: int = 1024,
                    cache_graph: bool | None = None) -> tuple[Density, int]:
    """SLQ density of the loss Hessian w.r.t. the prunable weights on (x, y); returns (density, products)."""
    params = [p for _, p in prunable_weights(model)]
    if cache_graph is None:
        cache_graph = len(x) <= 4096
    op = HessianOperator(model, params, x, y, task=task, chunk=chunk, cache_graph=cache_graph)
    try:
        dens = slq_density(op, op.dim, steps=steps, n_vectors=n_vectors, seed=seed)
    finally:
        op.release()
    return dens, op.products
