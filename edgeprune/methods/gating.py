"""Reusable pieces for gate-based pruning methods.

* hard-concrete gates (Louizos, Welling & Kingma 2018, "Learning Sparse Neural Networks
  through L0 Regularization"): a stretched, clamped binary-concrete variable per node. A
  sample is exactly 0 or exactly 1 with positive probability and differentiable in
  between, so a gate of 0 during training *is* the removed node;
* the differentiable expected MACs of the compact model under independent gates, with
  the same per-layer formula as :meth:`~edgeprune.surgery.ModelGraph.cost`
  (:class:`ExpectedCost`);
* the condition-number estimate of the masked network from its empirical tangent kernel.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# stretch interval of the hard-concrete distribution (Louizos et al. 2018)
HC_LOW, HC_HIGH = -0.1, 1.1


def hc_sample(log_alpha: torch.Tensor, beta: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One hard-concrete sample per entry (reparameterised: differentiable in ``log_alpha``)."""
    u = torch.rand(log_alpha.shape, generator=generator, dtype=log_alpha.dtype).clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / beta)
    return (s * (HC_HIGH - HC_LOW) + HC_LOW).clamp(0.0, 1.0)


def hc_deterministic(log_alpha: torch.Tensor) -> torch.Tensor:
    """The test-time gate value: the sample with the noise at its median."""
    return (torch.sigmoid(log_alpha) * (HC_HIGH - HC_LOW) + HC_LOW).clamp(0.0, 1.0)


def hc_prob_open(log_alpha: torch.Tensor, beta: float) -> torch.Tensor:
    """P(gate != 0): the probability that the node is kept (the L0 term of Louizos et al.)."""
    return torch.sigmoid(log_alpha - beta * math.log(-HC_LOW / HC_HIGH))


def _layer_parts(lc, graph) -> tuple[list[tuple[str, list[int]]], int, list[tuple[str, list[int]]], int]:
    """``(out_parts, out_full, in_parts, in_full)`` of a LayerCost: per group, the group
    channel ("root index") behind each of the layer's own channels (flatten repeats them)."""
    if hasattr(lc, "out_parts"):
        return list(lc.out_parts), int(lc.out_full), list(lc.in_parts), int(lc.in_full)
    # older table layout: one output group, input segments with a multiplicity
    size = {g: grp.size for g, grp in graph.groups.items()}
    outs = [(lc.out_group, list(range(size[lc.out_group])))] if lc.out_group else []
    ins = [(g, [r for r in range(size[g]) for _ in range(m)]) for g, m in lc.in_segments]
    return outs, int(lc.out_full), ins, int(lc.in_fixed + sum(len(r) for _, r in ins))


class ExpectedCost:
    """Differentiable E[MACs] of the compact model under independent per-node keep probabilities.

    Mirrors the cost table of :class:`~edgeprune.surgery.ModelGraph`: a layer costs
    ``out * in / groups * kernel * spatial`` MACs (depthwise: ``out * kernel * spatial``)
    where ``out`` / ``in`` are its kept output / input channels. Each of the layer's
    channels that belongs to a group is kept with its node's probability ``q``, so
    ``E[out] = out_full - sum(1 - q)`` over the owned channels. No layer has its input and
    output in the same group (depthwise layers are costed on their output only), and gates
    are independent, so ``E[out * in] = E[out] * E[in]``: the value is the exact
    expectation, and with 0/1 probabilities it equals ``graph.cost_of_sets`` (or
    ``graph.cost`` for the widths). A gated residual branch multiplies the cost of its
    layers by the branch's keep probability.

    ``offsets`` places group ``g`` at ``q[offsets[g] : offsets[g] + size]``.

    ``layer_weights`` (layer name -> factor, missing layers 1.0) multiplies each layer's MACs:
    a latency-weighted cost (e.g. the target's predicted time per MAC of the layer, from
    :func:`edgeprune.bench.planning.layer_latency_weights`). Default: plain MACs, unchanged.
    """

    def __init__(self, graph, offsets: dict[str, int], branch_names: list[str] = (),
                 layer_weights: dict[str, float] | None = None):
        weights = dict(layer_weights or {})
        self.rows = []
        bindex = {b: i for i, b in enumerate(branch_names)}
        layer_branch = {layer: bindex[b] for b in branch_names for layer in graph.branches[b].layers}
        for lc in graph.layers.values():
            if lc.kind == "norm":
                continue
            outs, out_full, ins, in_full = _layer_parts(lc, graph)

            def idx(parts):
                ix = [offsets[g] + r for g, roots in parts if g in offsets for r in roots]
                return torch.as_tensor(ix, dtype=torch.long)

            coef = lc.kernel * lc.spatial if lc.kind == "depthwise" else lc.kernel * lc.spatial / lc.groups
            coef = coef * float(weights.get(lc.name, 1.0))
            self.rows.append((lc.kind == "depthwise", float(out_full), idx(outs), float(in_full), idx(ins),
                              float(coef), layer_branch.get(lc.name, -1)))

    def __call__(self, q: torch.Tensor, qb: torch.Tensor | None = None) -> torch.Tensor:
        q = q.double()  # MACs of real models exceed float32's exact integer range
        qb = qb.double() if qb is not None else None
        total = q.new_zeros(())
        for depthwise, out_full, out_idx, in_full, in_idx, coef, b in self.rows:
            out = out_full - (1 - q[out_idx]).sum() if len(out_idx) else q.new_tensor(out_full)
            if depthwise:
                macs = out * coef
            else:
                cin = in_full - (1 - q[in_idx]).sum() if len(in_idx) else q.new_tensor(in_full)
                macs = out * cin * coef
            if b >= 0 and qb is not None:
                macs = macs * qb[b]
            total = total + macs
        return total


# ------------------------------------------------------------------ condition number


@dataclass
class KappaEstimate:
    kappa: torch.Tensor  # L̂ / μ̂ (differentiable when requested)
    lam_min: float
    lam_max: float
    seconds: float
    rows: int  # size of the kernel matrix (samples x outputs)

    def to_dict(self) -> dict:
        return {"kappa": float(self.kappa), "lam_min": self.lam_min, "lam_max": self.lam_max,
                "seconds": self.seconds, "rows": self.rows}


def tangent_kernel(fn, params: dict[str, torch.Tensor], xs: torch.Tensor) -> torch.Tensor:
    """Empirical tangent kernel ``K = J Jᵀ`` of ``fn`` on the samples ``xs``.

    ``fn(params, x)`` maps the parameters and ONE sample ``x`` to a flat output vector
    (``r`` entries); ``J`` stacks the per-sample Jacobians ``d fn(params, x_i) / d params``
    into ``(len(xs) * r, #params)`` rows, ordered sample-major. Computed with
    ``vmap(jacrev(fn))`` over the samples: each row costs one backward pass through one
    sample's graph. The result stays differentiable in every tensor ``fn`` closes over
    (the gates), so ``K`` can be back-propagated (double backward).
    """
    jac = torch.func.vmap(torch.func.jacrev(fn), in_dims=(None, 0))(params, xs)
    k = None
    for j in jac.values():
        j = j.reshape(j.shape[0] * j.shape[1], -1)  # (samples * outputs, parameter entries)
        part = j @ j.T
        k = part if k is None else k + part
    return k


def kappa_from_kernel(k: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(κ̂, μ̂, λ_max)`` with ``μ̂ = λ_min(K)`` and ``κ̂ = λ_max(K) / λ_min(K)``.

    Scale-free: rescaling the outputs by ``c`` multiplies ``K`` by ``c²`` and leaves κ̂
    unchanged (the earlier ``sqrt(λ_max) / λ_min`` changed by ``1/c``). For the square loss
    ``λ_min(K)`` lower-bounds the PL constant and ``λ_max(K)`` bounds the smoothness of the
    loss along the data (Liu, Zhu & Belkin 2020), so their ratio is the condition number of
    the linearised problem on these samples -- our reconstruction of the paper's κ = L/μ.
    The smallest eigenvalue needs more kernel rows than a handful of samples give: use at
    least 32 samples (``kappa_batch``).
    """
    ev = torch.linalg.eigvalsh(0.5 * (k + k.T).double())
    lam_max = ev[-1].clamp_min(eps)
    lam_min = ev[0].clamp_min(eps * lam_max.detach())
    return lam_max / lam_min, lam_min, lam_max


def timed_kappa(fn, params: dict[str, torch.Tensor], xs: torch.Tensor) -> KappaEstimate:
    t0 = time.perf_counter()
    k = tangent_kernel(fn, params, xs)
    kappa, lmin, lmax = kappa_from_kernel(k)
    return KappaEstimate(kappa, float(lmin.detach()), float(lmax.detach()), time.perf_counter() - t0, int(k.shape[0]))


def loss_level_kappa(loss_fn, params: dict[str, torch.Tensor], power_steps: int = 5, seed: int = 0,
                     eps: float = 1e-12) -> KappaEstimate:
    """κ̂ = L̂ / μ̂ from the loss itself, the PL form the paper states (the issue's alternative to the kernel).

    ``loss_fn(params)`` is the task loss on a fixed batch. **μ̂** = ‖∇L‖² / (2 (L − L*)) with L* = 0 (the infimum of
    cross-entropy and of the squared error): the local Polyak-Łojasiewicz constant, ½‖∇L‖² ≥ μ (L − L*).
    **L̂** = the largest Hessian eigenvalue (in absolute value) by ``power_steps`` steps of power iteration with
    Hessian-vector products (a fixed random start): the local smoothness. Scale-free: multiplying the loss by c
    multiplies both by c. Only μ̂ is differentiable (in every tensor ``loss_fn`` closes over, the gates: one
    double backward); L̂ enters as a constant of the step (differentiating it would take a third order).
    ``lam_min``/``lam_max`` of the estimate carry μ̂ and L̂; ``rows`` the number of power steps."""
    t0 = time.perf_counter()
    ps = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    xs = list(ps.values())
    loss = loss_fn(ps)
    # a parameter the forward does not use has gradient 0 (not an error), as in the kernel estimator
    g = torch.autograd.grad(loss, xs, create_graph=True, allow_unused=True, materialize_grads=True)
    mu = sum((gi * gi).sum() for gi in g) / (2 * loss.clamp_min(eps))
    gen = torch.Generator().manual_seed(seed)
    v = [torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device) for x in xs]
    lmax = 0.0
    for _ in range(max(1, power_steps)):
        n = math.sqrt(sum(float((vi * vi).sum()) for vi in v)) or 1.0
        v = [vi / n for vi in v]
        hv = torch.autograd.grad(g, xs, grad_outputs=v, retain_graph=True, allow_unused=True,
                                 materialize_grads=True)
        # ‖Hv‖ of a unit v never exceeds |λ|max and reaches it as v aligns (even when the Hessian is indefinite
        # and the Rayleigh quotient would cancel); the largest over the iterations
        lmax = max(lmax, math.sqrt(sum(float((h * h).sum()) for h in hv)))
        v = [h.detach() for h in hv]
    mu = mu.double().clamp_min(eps)
    lam = max(lmax, eps)
    return KappaEstimate(lam / mu, float(mu.detach()), lam, time.perf_counter() - t0, max(1, power_steps))


def standardize(v: np.ndarray) -> np.ndarray:
    """``(v - mean) / std`` over all entries (std 0: zeros), so scores of different kinds can be added."""
    v = np.asarray(v, dtype=np.float64)
    sd = float(v.std())
    return (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)


def kept_overlap(keep_a: dict[str, list[int]], keep_b: dict[str, list[int]]) -> dict[str, float]:
    """Per group ``|A ∩ B| / max(|A|, |B|)`` of two plans' kept index sets (1: the same nodes kept)."""
    out = {}
    for g in sorted(set(keep_a) & set(keep_b)):
        a, b = set(keep_a[g]), set(keep_b[g])
        out[g] = len(a & b) / max(len(a), len(b), 1)
    return out


def output_projection(n_out: int, n_keep: int, seed: int) -> torch.Tensor | None:
    """A fixed orthonormal ``(n_out, n_keep)`` projection, or None when every output is kept."""
    if n_out <= n_keep:
        return None
    g = np.random.default_rng(seed)
    q, _ = np.linalg.qr(g.standard_normal((n_out, n_keep)))
    return torch.from_numpy(q.astype(np.float32))


def bn_eval(model: nn.Module):
    """Context manager: batch norms use their running statistics (and do not update them)."""
    return _BNEval(model)


class _BNEval:
    def __init__(self, model: nn.Module):
        self.bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __enter__(self):
        self.modes = [m.training for m in self.bns]
        for m in self.bns:
            m.eval()
        return self

    def __exit__(self, *exc):
        for m, t in zip(self.bns, self.modes):
            m.train(t)
        return False


# ------------------------------------------------------------------ static plan to a budget


def widths_to_budget(
    graph,
    scores: dict[str, np.ndarray],
    flops_keep: float,
    width_multiple: int = 1,
    dropped: list[str] | tuple = (),
    tol: float = 0.05,
) -> tuple[dict[str, int], dict]:
    """Per-group kept widths whose exact MACs (``graph.cost``) are as close as possible to the budget.

    ``scores`` are per-channel and comparable across groups (e.g. gate logits). Step 1:
    bisection on one global threshold -- a group keeps its channels scoring at or above it
    (at least one, rounded up to ``width_multiple``) -- for the most channels within the
    budget. Step 2: greedy fill -- repeatedly add one width step to the group whose next
    channels score highest among the steps that still fit the budget. Step 3: when the
    result is still more than ``tol`` away from the budget (coarse width multiples), a local
    search over single and paired width steps (one group up, another down) looks for widths
    within ``±tol`` -- preferring at most the budget, then the best-scored channels. Groups whose
    producers are all inside dropped branches cost nothing and stay at full width.

    Returns ``(widths, info)`` with ``info = {"macs", "goal", "rel_error", "within_tol"}``.
    """
    from ..surgery.plan import round_width

    goal = flops_keep * graph.dense_cost()["macs"]
    skip = {layer for b in dropped for layer in graph.branches[b].layers}
    active = [g for g, grp in graph.groups.items()
              if any(m.rpartition(":")[0] not in skip for m in grp.members if m.endswith(":out"))]
    order = {g: np.argsort(-np.asarray(scores[g], dtype=np.float64), kind="stable") for g in active}
    sorted_scores = {g: np.asarray(scores[g], dtype=np.float64)[order[g]] for g in active}
    full = graph.full_keep()

    def macs(w: dict[str, int]) -> int:
        return graph.cost(w, dropped)["macs"]

    def at_threshold(t: float) -> dict[str, int]:
        w = dict(full)
        for g in active:
            n = int((sorted_scores[g] >= t).sum())
            w[g] = round_width(max(1, n), width_multiple, graph.groups[g].size)
        return w

    cand = np.unique(np.concatenate([sorted_scores[g] for g in active])) if active else np.zeros(0)
    if len(cand) == 0 or macs(full) <= goal:
        w = dict(full)
    else:
        # thresholds ascending -> kept widths (and MACs) non-increasing; find the lowest one within budget
        lo, hi = 0, len(cand) - 1
        if macs(at_threshold(cand[hi])) > goal:
            lo = hi  # even the top channel of each group is over budget: keep the minimum
        else:
            while lo < hi:
                mid = (lo + hi) // 2
                if macs(at_threshold(cand[mid])) <= goal:
                    hi = mid
                else:
                    lo = mid + 1
        w = at_threshold(cand[lo])

    def step(g: str, w: dict[str, int]) -> int:
        size = graph.groups[g].size
        return min(size, round_width(w[g] + 1, width_multiple, size))

    # allowed widths per group, and the value of keeping the top-n channels (shifted scores:
    # every channel is worth something, better-scored channels more)
    grids = {g: sorted({round_width(n, width_multiple, graph.groups[g].size) for n in range(1, graph.groups[g].size + 1)})
             for g in active}
    low = min((float(sorted_scores[g].min()) for g in active), default=0.0)
    prefix = {g: np.concatenate([[0.0], np.cumsum(sorted_scores[g] - low + 1.0)]) for g in active}

    def value(w: dict[str, int]) -> float:
        return float(sum(prefix[g][w[g]] for g in active))

    # greedy fill under the budget, best next channels first
    while True:
        best, best_score = None, -np.inf
        for g in active:
            n = step(g, w)
            if n <= w[g]:
                continue
            trial = dict(w, **{g: n})
            if macs(trial) > goal:
                continue
            s = float(sorted_scores[g][w[g]:n].mean())
            if s > best_score:
                best, best_score = trial, s
        if best is None:
            break
        w = best
    m = macs(w)
    if abs(m / goal - 1) > tol if goal else False:
        w = _repair(w, active, grids, macs, value, goal, tol)
        m = macs(w)
    rel = (m - goal) / goal if goal else 0.0
    return w, {"macs": int(m), "goal": float(goal), "rel_error": float(rel), "within_tol": bool(abs(rel) <= tol)}


def _repair(w, active, grids, macs, value, goal, tol, max_iter: int = 500):
    """Hill-climb on width steps to bring MACs within ``±tol`` of ``goal`` (see :func:`widths_to_budget`)."""

    def key(x):
        m = macs(x)
        return (max(0.0, abs(m / goal - 1) - tol), m > goal, -value(x))

    def moves(x):
        for g in active:
            i = grids[g].index(x[g])
            for j in (i - 1, i + 1):
                if 0 <= j < len(grids[g]):
                    yield {g: grids[g][j]}
        for g in active:
            i = grids[g].index(x[g])
            if i + 1 >= len(grids[g]):
                continue
            for h in active:
                k = grids[h].index(x[h])
                if h != g and k > 0:
                    yield {g: grids[g][i + 1], h: grids[h][k - 1]}

    best, best_key = w, key(w)
    for _ in range(max_iter):
        cand = min(((key(t), t) for t in (dict(best, **mv) for mv in moves(best))), key=lambda kt: kt[0], default=None)
        if cand is None or not cand[0] < best_key:
            break
        best_key, best = cand
    return best


@contextmanager
def vmap_safe_prelu(model: nn.Module):
    """Context manager: every ``nn.PReLU`` computes ``where(x >= 0, x, a * x)`` (the same values) instead of
    ``F.prelu``, whose backward has no working batching rule under ``vmap(jacrev(...))`` (the tangent kernel
    fails with a size mismatch on a per-channel PReLU, torch 2.13)."""
    prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]

    def where_prelu(mod):
        def forward(x):
            w = mod.weight.view(1, -1, *[1] * (x.dim() - 2)) if x.dim() > 1 else mod.weight
            return torch.where(x >= 0, x, w * x)
        return forward

    for m in prelus:
        m.forward = where_prelu(m)
    try:
        yield
    finally:
        for m in prelus:
            m.__dict__.pop("forward", None)
