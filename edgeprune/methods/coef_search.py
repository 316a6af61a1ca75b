"""Searching soft pruning coefficients under a sparsity band (the numeric half of ``soft-coef``).

A coefficient vector ``c`` (one entry per coupled group, the fraction of the group's channels
removed) becomes whole channels: ``kept_g = round_width(size_g - round(c_g * size_g))``.
:class:`Problem` knows the group sizes, the box ``lo <= c <= hi`` (``hi`` carries the
per-component floors), the removed fraction ``rho(c)`` of parameters or MACs and the band
``|rho(c) - rho*| <= eps``; its :meth:`Problem.metric` evaluates the user's metric once per
distinct set of widths and counts the evaluations.

Optimisers (each returns a coefficient vector whose rounded widths satisfy the band):

* :func:`grid_search`: every grid point whose rounded widths lie in the band, counted before the
  first evaluation and refused when over the evaluation budget;
* :func:`gradient_ascent`: projected gradient ascent with central differences
  ``(M(c + d e_g) - M(c - d e_g)) / 2d`` (:func:`fd_gradient`), a geometric step-size schedule and
  projection onto box ∩ band (:meth:`Problem.project`);
* baselines :func:`uniform`, :func:`random_feasible` and :func:`proportional` (L1-norm
  proportional: groups with small weights are pruned more).

Nothing here imports torch: the metric is a callable on widths.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import ConfigError
from ..surgery import round_width

ENUMERATION_LIMIT = 2_000_000  # grid combinations whose cost we are willing to enumerate


class CostTable:
    """Vectorised parameters / MACs of a :class:`~edgeprune.surgery.ModelGraph` for many width vectors.

    Same formula as :meth:`ModelGraph.cost` (kept counts per group), but over an array of shape
    (points, groups) at once; ``exact=False`` skips the per-part rounding (a smooth relaxation
    used to find projection directions)."""

    def __init__(self, graph, names: list[str]):
        self.names = names
        idx = {g: i for i, g in enumerate(names)}
        self.sizes = np.array([graph.groups[g].size for g in names], dtype=np.float64)
        self.const_params = graph.const_params
        self.layers = []
        for lc in graph.layers.values():
            outs = [(idx[g], len(r)) for g, r in lc.out_parts if g in idx]
            ins = [(idx[g], len(r)) for g, r in lc.in_parts if g in idx]
            self.layers.append((lc, outs, ins))

    def __call__(self, widths: np.ndarray, exact: bool = True) -> tuple[np.ndarray, np.ndarray]:
        w = np.atleast_2d(np.asarray(widths, dtype=np.float64))
        params = np.full(len(w), float(self.const_params))
        macs = np.zeros(len(w))

        def kept(full, parts):
            n = np.full(len(w), float(full))
            for i, nroots in parts:
                share = nroots * w[:, i] / self.sizes[i]
                n -= nroots - (np.round(share) if exact else share)
            return n

        for lc, outs, ins in self.layers:
            out, cin = kept(lc.out_full, outs), kept(lc.in_full, ins)
            if lc.kind == "norm":
                p, m = (2 * out if lc.bias else 0 * out), 0 * out
            else:
                p = out * lc.kernel if lc.kind == "depthwise" else out * (cin / lc.groups) * lc.kernel
                m = p * lc.spatial
                p = p + (out if lc.bias else 0)
            params += p
            macs += m
        return params, macs


@dataclass
class Problem:
    names: list[str]
    sizes: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    cost: CostTable
    kind: str  # "params" | "macs"
    target: float  # rho*
    eps: float
    width_multiple: int = 1
    evaluate: Callable[[dict], float] | None = None  # widths -> metric (higher is better)
    cache: dict = field(default_factory=dict)
    trace: list = field(default_factory=list)  # (evaluation #, metric, rho) per new evaluation
    t0: float = field(default_factory=time.perf_counter)

    def __post_init__(self):
        p, m = self.cost(self.sizes)
        self.dense = float((p if self.kind == "params" else m)[0])

    # --------------------------------------------------------------- widths / rho
    def kept(self, c: np.ndarray) -> np.ndarray:
        c = np.clip(np.asarray(c, dtype=np.float64), self.lo, self.hi)
        removed = np.minimum(np.round(c * self.sizes), np.floor(self.hi * self.sizes + 1e-9))
        n = self.sizes - removed
        return np.array([round_width(int(k), self.width_multiple, int(s)) for k, s in zip(n, self.sizes)], dtype=float)

    def snap(self, c: np.ndarray) -> np.ndarray:
        """The coefficients the rounded widths really remove."""
        return 1.0 - self.kept(c) / self.sizes

    def rho_of_kept(self, kept: np.ndarray, exact: bool = True) -> np.ndarray:
        p, m = self.cost(kept, exact)
        return 1.0 - (p if self.kind == "params" else m) / self.dense

    def rho(self, c: np.ndarray) -> float:
        return float(self.rho_of_kept(self.kept(c))[0])

    def rho_smooth(self, c: np.ndarray) -> float:
        return float(self.rho_of_kept(self.sizes * (1.0 - np.clip(c, self.lo, self.hi)), exact=False)[0])

    def feasible(self, c: np.ndarray) -> bool:
        return abs(self.rho(c) - self.target) <= self.eps + 1e-12

    def widths(self, c: np.ndarray) -> dict[str, int]:
        return {g: int(k) for g, k in zip(self.names, self.kept(c))}

    # --------------------------------------------------------------- metric
    @property
    def evaluations(self) -> int:
        return len(self.cache)

    def metric(self, c: np.ndarray) -> float:
        key = tuple(int(k) for k in self.kept(c))
        if key not in self.cache:
            self.cache[key] = float(self.evaluate(dict(zip(self.names, key))))
            self.trace.append((len(self.cache), self.cache[key], self.rho(c), time.perf_counter() - self.t0))
        return self.cache[key]

    def metric_many(self, cs: np.ndarray, evaluate_many: Callable[[list[dict]], list[float]]) -> list[float]:
        """:meth:`metric` of every row of ``cs``, the new distinct widths evaluated by one ``evaluate_many`` call
        (e.g. over a process pool); cache, evaluation count and trace end up as the serial loop leaves them."""
        keys = [tuple(int(k) for k in self.kept(c)) for c in cs]
        new = list(dict.fromkeys(k for k in keys if k not in self.cache))
        first = {k: c for k, c in zip(reversed(keys), cs[::-1])}  # the first row giving each key
        values = evaluate_many([dict(zip(self.names, k)) for k in new]) if new else []
        if len(values) != len(new):
            raise RuntimeError(f"evaluate_many returned {len(values)} values for {len(new)} widths")
        for k, v in zip(new, values):
            self.cache[k] = float(v)
            self.trace.append((len(self.cache), self.cache[k], self.rho(first[k]), time.perf_counter() - self.t0))
        return [self.cache[k] for k in keys]

    # --------------------------------------------------------------- projection
    def direction(self, c: np.ndarray) -> np.ndarray:
        """Gradient of the smooth rho at ``c``: the normal of the band's surface (all entries >= 0)."""
        h, g = 1e-4, np.zeros(len(c))
        for i in range(len(c)):
            e = np.zeros(len(c))
            e[i] = h
            lo, hi = np.maximum(c - e, 0.0), np.minimum(c + e, 1.0)
            g[i] = (self.rho_smooth_raw(hi) - self.rho_smooth_raw(lo)) / max(hi[i] - lo[i], 1e-12)
        return np.maximum(g, 1e-9)

    def rho_smooth_raw(self, c: np.ndarray) -> float:
        return float(self.rho_of_kept(self.sizes * (1.0 - c), exact=False)[0])

    def project(self, c: np.ndarray, direction: np.ndarray | None = None) -> np.ndarray:
        """The box point ``clip(c + t * a)`` whose rounded widths lie in the band, nearest to rho*.

        ``a`` defaults to grad rho (the Euclidean projection onto box ∩ {rho = rho*} of the
        linearised constraint); a given ``direction`` (all ones: a uniform shift; ``c`` itself:
        a scaling) keeps that shape. The rounded rho is monotone in ``t``: bisection finds the
        crossing, then single-channel moves repair a rounding step that jumps over the band."""
        c = np.clip(np.asarray(c, dtype=np.float64), self.lo, self.hi)
        a = self.direction(c) if direction is None else np.maximum(np.asarray(direction, dtype=float), 0.0)
        if not np.any(a > 0):
            a = np.ones(len(c))
        a = a / a.max()
        span = 1.0 / max(a[a > 0].min(), 1e-6)

        def point(t):
            return np.clip(c + t * a, self.lo, self.hi)

        lo_t, hi_t = -span, span
        if self.rho(point(hi_t)) < self.target - self.eps:
            raise ConfigError(
                f"the sparsity target {self.target:.1%} ± {self.eps:.1%} of {self.kind} cannot be reached: even the "
                f"largest coefficients allowed by the floors and width multiple {self.width_multiple} remove "
                f"{self.rho(point(hi_t)):.1%}; lower the floor (floor=..., component_floors=...), the width multiple "
                "or the target")
        if self.rho(point(lo_t)) > self.target + self.eps:
            raise ConfigError(f"the sparsity target {self.target:.1%} ± {self.eps:.1%} of {self.kind} is below what "
                              "width rounding allows; raise the target or lower the width multiple")
        for _ in range(60):  # rounded rho(t) is non-decreasing: find the first t with rho >= rho*
            mid = (lo_t + hi_t) / 2
            if self.rho(point(mid)) >= self.target:
                hi_t = mid
            else:
                lo_t = mid
        cands = [self.snap(point(lo_t)), self.snap(point(hi_t))]
        best = min(cands, key=lambda x: abs(self.rho(x) - self.target))
        if self.feasible(best):
            return best
        return self._repair(cands[0])

    def _repair(self, c: np.ndarray) -> np.ndarray:
        """Single-channel moves from ``c`` (rho below the band) until one lands in the band."""
        best, gap = None, float("inf")
        step = self.width_multiple / self.sizes
        for i in range(len(c)):
            for j in range(len(c)):
                x = c.copy()
                x[i] += step[i]
                if j != i:
                    x[j] -= step[j]
                x = self.snap(np.clip(x, self.lo, self.hi))
                d = abs(self.rho(x) - self.target)
                if d <= self.eps and d < gap:
                    best, gap = x, d
        if best is None:
            raise ConfigError(f"no whole-channel rounding lands in {self.kind} sparsity {self.target:.1%} ± "
                              f"{self.eps:.1%}; widen eps (e.g. eps=0.05) or lower the width multiple")
        return best


# --------------------------------------------------------------------------- gradient
def fd_gradient(f: Callable[[np.ndarray], float], c: np.ndarray, delta: float | np.ndarray, lo=0.0, hi=1.0,
                snap: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Central differences ``(f(c + d e_g) - f(c - d e_g)) / (c+_g - c-_g)`` inside the box.

    ``snap`` maps a point to the one really evaluated (whole channels); the denominator is the
    distance actually travelled, so clipping at the box or rounding does not bias the estimate.
    Two evaluations per coordinate."""
    c = np.asarray(c, dtype=np.float64)
    d = np.broadcast_to(np.asarray(delta, dtype=np.float64), c.shape)
    lo, hi = np.broadcast_to(lo, c.shape), np.broadcast_to(hi, c.shape)
    g = np.zeros(len(c))
    for i in range(len(c)):
        up, dn = c.copy(), c.copy()
        up[i], dn[i] = min(hi[i], c[i] + d[i]), max(lo[i], c[i] - d[i])
        if snap is not None:
            up, dn = snap(up), snap(dn)
        span = up[i] - dn[i]
        g[i] = (f(up) - f(dn)) / span if span > 1e-12 else 0.0
    return g


def gradient_ascent(p: Problem, c0: np.ndarray, *, iters: int = 6, delta: float = 0.1, step: float = 0.2,
                    decay: float = 0.7, patience: int = 3,
                    log: Callable[[str], None] = lambda s: None) -> tuple[np.ndarray, dict]:
    """Projected gradient ascent from ``c0`` (projected first); the best feasible iterate wins.

    Step ``k`` moves ``max(step * decay**k, unit)`` (coefficient units; ``unit``: the largest one-channel,
    or one-width-multiple, change of any group, so that late steps still change widths) along the
    estimate normalised to a largest entry of 1, then projects onto box ∩ band. FD steps are at least
    one channel (``width_multiple / size``)."""
    c = p.project(c0)
    best_c, best_m = c, p.metric(c)
    deltas = np.maximum(delta, p.width_multiple / p.sizes)
    unit = float(np.max(p.width_multiple / p.sizes))  # the schedule never drops below one rounding step
    path = [{"iter": 0, "metric": best_m, "rho": p.rho(c), "evaluations": p.evaluations, "c": c.round(4).tolist()}]
    stale = 0
    for k in range(iters):
        if stale >= patience:
            log(f"  gradient: no better iterate in {patience} iterations, stopping")
            break
        g = fd_gradient(p.metric, c, deltas, p.lo, p.hi, snap=p.snap)
        norm = np.abs(g).max()
        if norm == 0:
            log(f"  gradient {k + 1}: zero estimate, stopping")
            break
        eta = max(step * decay**k, unit)
        c_new = p.project(c + eta * g / norm)
        m = p.metric(c_new)
        c = c_new
        if m > best_m:
            best_c, best_m, stale = c, m, 0
        else:
            stale += 1
        path.append({"iter": k + 1, "metric": m, "rho": p.rho(c), "evaluations": p.evaluations, "step": eta,
                     "c": c.round(4).tolist()})
        log(f"  gradient {k + 1}/{iters}: metric {m:.4g}, rho {p.rho(c):.3f}, step {eta:.3f}, "
            f"{p.evaluations} evaluations")
    return best_c, {"path": path}


# --------------------------------------------------------------------------- grid
def grid_levels(p: Problem, step: float) -> list[np.ndarray]:
    """Per group: the distinct snapped coefficients of ``lo, lo + step, ..., hi``."""
    levels = []
    for i in range(len(p.names)):
        vals = np.arange(p.lo[i], p.hi[i] + 1e-9, step)
        if vals[-1] < p.hi[i] - 1e-9:
            vals = np.append(vals, p.hi[i])
        kept = sorted({round_width(int(p.sizes[i] - round(v * p.sizes[i])), p.width_multiple, int(p.sizes[i]))
                       for v in vals}, reverse=True)
        levels.append(1.0 - np.array(kept, dtype=float) / p.sizes[i])
    return levels


def grid_points(p: Problem, step: float) -> tuple[np.ndarray, int]:
    """The grid points inside the band (as coefficient rows) and the size of the full grid."""
    levels = grid_levels(p, step)
    total = math.prod(len(v) for v in levels)
    if total > ENUMERATION_LIMIT:
        raise ConfigError(f"the coefficient grid has {total:,} combinations ({len(levels)} groups); raise grid_step "
                          f"(now {step}) or use optimizer=gradient")
    pts = np.array(list(itertools.product(*levels)), dtype=np.float64).reshape(-1, len(levels))
    rho = p.rho_of_kept(p.sizes * (1.0 - pts))
    return pts[np.abs(rho - p.target) <= p.eps + 1e-12], total


def grid_search(p: Problem, *, step: float = 0.1, max_evals: int = 500,
                log: Callable[[str], None] = lambda s: None,
                evaluate_many: Callable[[list[dict]], list[float]] | None = None) -> tuple[np.ndarray, dict]:
    """The best band point of the grid (the first of equals, in grid order). ``evaluate_many`` (widths dicts ->
    metrics, in order) evaluates all points in one call, e.g. over a process pool; the result is the serial one."""
    pts, total = grid_points(p, step)
    log(f"  grid: {len(pts)} of {total:,} grid points lie in the band: {len(pts)} metric evaluations")
    if len(pts) > max_evals:
        raise ConfigError(f"grid search needs {len(pts)} metric evaluations (grid_step {step}, {len(p.names)} groups), "
                          f"over the budget max_evals={max_evals}; raise grid_step or max_evals, or use "
                          "optimizer=gradient")
    if len(pts) == 0:
        raise ConfigError(f"no grid point lies in sparsity {p.target:.1%} ± {p.eps:.1%}; lower grid_step or widen eps")
    scores = p.metric_many(pts, evaluate_many) if evaluate_many is not None else [p.metric(x) for x in pts]
    i = int(np.argmax(scores))
    return pts[i], {"grid_points": int(len(pts)), "grid_total": int(total)}


# --------------------------------------------------------------------------- baselines
def uniform(p: Problem) -> np.ndarray:
    """The same coefficient for every group (as far as the floors allow)."""
    return p.project(np.asarray(p.lo, dtype=float).copy(), direction=np.ones(len(p.names)))


def random_feasible(p: Problem, rng: np.random.Generator) -> np.ndarray:
    """A random box point shifted (all coefficients by the same amount) into the band."""
    return p.project(rng.uniform(p.lo, p.hi), direction=np.ones(len(p.names)))


def proportional(p: Problem, weights: np.ndarray) -> np.ndarray:
    """Coefficients proportional to ``weights`` (scaled into the band)."""
    return p.project(np.asarray(p.lo, dtype=float).copy(), direction=np.asarray(weights, dtype=float))
