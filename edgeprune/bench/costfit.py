"""Fitting the cost model's per-runtime factors on measured models (:func:`fit_factors`).

Split out of :mod:`edgeprune.bench.costmodel`; used by :mod:`edgeprune.bench.hostcal` (``edgeprune
calibrate --host``) and benchmarks/costmodel/host_error.py.
"""

from __future__ import annotations

import math

from ..errors import InputError
from .costmodel import DEFAULT_CACHE_KB, _peak_key, _target
from .graphcost import MIB, GraphCost, analyze

FIT_PARAMS = ("eff_compute", "eff_mem", "eff_mem_large", "per_op_overhead_us", "per_run_overhead_us")
# fitted in log space as (eff_compute, eff_mem, eff_mem_large / eff_mem <= 1, per-op, per-run)
_FIT_LO = (1e-3, 1e-2, 1e-2, 1e-3, 1e-3)
_FIT_HI = (5.0, 100.0, 1.0, 50.0, 50.0)
_FIT_STARTS = ((0.5, 3.0, 0.5, 1.0, 1.0), (0.9, 10.0, 0.3, 0.5, 2.0))


def _fit_rows(gc: GraphCost, peak: float, bw: float, cache_bytes: float) -> tuple:
    """(per-op (compute us at eff 1, memory us at eff 1, fits in cache), ops dispatched) for fitting."""
    return ([(o.work / (peak * 1e3), o.bytes / (bw * 1e3), o.bytes <= cache_bytes) for o in gc.ops],
            gc.n_dispatched)


def _fit_model(theta, rows) -> "list[float]":
    ec, em, ratio, c, d = (math.exp(x) for x in theta)
    eml = em * ratio
    return [sum(max(w / ec, b / (em if small else eml)) for w, b, small in ops) + c * n + d for ops, n in rows]


def fit_factors(samples: list, target="host", *, dtype: str = "fp32", fuse_add: bool = False) -> dict:
    """Fit eff_compute, eff_mem (ops whose bytes fit in the host's L2), eff_mem_large, per_op_overhead_us and
    per_run_overhead_us on (onnx path | GraphCost, measured ms[, model_footprint_mb]) samples measured on
    ``target`` (default: this host) at one thread: least squares on the relative error, in log space (all
    factors positive), from two starting points.

    With footprints it also fits the memory model ``footprint = mem_base_mb + mem_weight_factor * weights +
    mem_act_factor * activation peak`` (MiB, non-negative least squares)."""
    import numpy as np
    from scipy.optimize import least_squares

    t = _target(target)
    peak, bw = t.peak_compute(dtype), float(t.fact("mem_bandwidth_gbs"))
    cache = float(t.fact("l2_cache_kb", DEFAULT_CACHE_KB)) * 1024
    samples = [tuple(x) for x in samples]
    if len(samples) < 3:
        raise InputError(f"calibration needs at least 3 measured models, got {len(samples)}")
    gcs = [s[0] if isinstance(s[0], GraphCost) else analyze(s[0], dtype, pad_to=t.width_multiple, fuse_add=fuse_add)
           for s in samples]
    y = np.array([float(s[1]) * 1e3 for s in samples])
    rows = [_fit_rows(g, peak, bw, cache) for g in gcs]
    lo, hi = np.log(_FIT_LO), np.log(_FIT_HI)
    if not any(not small for ops, _ in rows for _, _, small in ops):
        lo[2] = -1e-9  # no op larger than the cache: its bandwidth cannot be fitted, keep eff_mem_large = eff_mem
    best = None
    for x0 in _FIT_STARTS:
        res = least_squares(lambda th: (np.array(_fit_model(th, rows)) - y) / y,
                            x0=np.clip(np.log(x0), lo, hi - 1e-12), bounds=(lo, hi))
        if best is None or res.cost < best.cost:
            best = res
    pred = np.array(_fit_model(best.x, rows))
    ec, em, ratio, c, d = (float(math.exp(x)) for x in best.x)
    out = dict(zip(FIT_PARAMS, (ec, em, em * ratio, c, d)))
    foot = [float(s[2]) for s in samples if len(s) > 2 and s[2] is not None]
    if len(foot) == len(gcs):
        F_ = np.array(foot)
        A = np.stack([np.ones(len(gcs)), [g.weight_bytes / MIB for g in gcs],
                      [g.activation_peak_bytes / MIB for g in gcs]], axis=1)
        base, kw, ka = _nnls_small(A, F_)
        out.update({"mem_base_mb": float(base), "mem_weight_factor": float(kw), "mem_act_factor": float(ka),
                    "mem_fit_median_abs_err_mb": float(np.median(np.abs(A @ np.array([base, kw, ka]) - F_)))})
    out.update({
        "fuse_add": fuse_add,
        "host_peak_gops": peak,
        "host_peak_basis": t.device[_peak_key(dtype)].basis,
        "host_peak_how": t.device[_peak_key(dtype)].source,
        "host_bandwidth_gbs": bw,
        "host_cache_kb": cache / 1024,
        "host_width_multiple": t.width_multiple,
        "n_models": len(gcs),
        "fit_median_abs_pct_err": float(np.median(np.abs(pred - y) / y * 100)),
    })
    return out


def _nnls_small(A, b):
    """Non-negative least squares for a handful of columns by enumerating active sets."""
    import itertools

    import numpy as np

    n = A.shape[1]
    best = (math.inf, np.zeros(n))
    for k in range(1, n + 1):
        for cols in itertools.combinations(range(n), k):
            x, *_ = np.linalg.lstsq(A[:, cols], b, rcond=None)
            if (x < 0).any():
                continue
            full = np.zeros(n)
            full[list(cols)] = x
            err = float(((A @ full - b) ** 2).sum())
            if err < best[0]:
                best = (err, full)
    return best[1]
