"""Kernel-level latency predictor (in the spirit of nn-Meter): one regression per fused-kernel group, summed.

For one runtime and precision (``onnxruntime-fp32``, ``onnxruntime-int8``, ``tflite-fp32``, ``tflite-int8``)::

    latency_us = per_run_us + sum over the kernels the runtime runs (edgeprune.bench.fusion) of t(kernel)
    t(kernel)  = theta[group(kernel)] . phi(kernel)

with ``phi`` the kernel's shape features (:data:`FEATURES`): a count (the kernel's fixed dispatch cost), its
MACs, the MACs the SIMD kernel wastes on channels that are not a multiple of the vector width (small or odd
channel counts run at a lower efficiency), and the bytes it moves (activations in + out, weights). ``theta`` is
non-negative and fitted per group (:data:`GROUP`) by least squares on the RELATIVE error of the measured latencies
(:func:`fit`): the model is linear in ``theta``, so models of many kernels (a whole network) and models of one
kernel (a micro-benchmark) fit the same parameters. The experiment (benchmarks/costmodel/predictor_error.py)
fits on single-kernel micro-benchmarks plus some architecture families and reports the error on held-out ones.

``kernel-v2`` (when the parameters carry a ``correction`` table) multiplies the linear time of every compute kernel
(conv, depthwise, gemm) by an efficiency factor that depends on its shape: how fast a kernel runs per MAC is not
linear in its size (vector-width remainders, cache blocking, im2col, per-pixel requantization in int8). The factor
is nn-Meter's regressor, a random forest, fitted on the single-kernel micro-benchmarks to
``log(measured time of the kernel / its linear time)`` (:func:`correction_table`). The table (kernel shape features
and targets) travels in the calibration file; the forest is refitted from it on first use, deterministically
(``random_state=0``), and cached.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

from ..errors import InputError
from .fusion import Kernel

#: the regression's kernel groups: dense convs (3x3 and 1x1 together), depthwise convs, matrix products, and
#: everything that only moves memory (pooling, element-wise, layout, quantize, views). Finer groups (one per
#: fusion.KERNEL_TYPES entry) predicted held-out families worse: too many parameters for the data (see
#: benchmarks/costmodel/predictor.md).
GROUP = {"conv": "conv", "pwconv": "conv", "dwconv": "dwconv", "gemm": "gemm"}
GROUPS = ("conv", "dwconv", "gemm", "memory")
#: shape features per group: "n" count, "macs", "pad" = macs_padded - macs, "bytes" = in + out + weights
FEATURES = {"conv": ("n", "macs", "pad", "bytes"), "dwconv": ("n", "macs", "pad", "bytes"),
            "gemm": ("n", "macs", "pad", "bytes"), "memory": ("n", "bytes")}
#: one coefficient shared by all kernels: "dram" = weight bytes when the model's weights exceed the last-level
#: cache (every run then streams them from DRAM; else they stay cached between runs)
SHARED = ("dram",)
#: assumed last-level cache when /sys does not say (bytes)
DEFAULT_LLC_BYTES = 8 * 2**20
#: column names of the design matrix: (group, feature) pairs, then the per-run constant
COLUMNS = tuple((t, f) for t in GROUPS for f in FEATURES[t]) + tuple(("all", f) for f in SHARED) + (("run", "n"),)


def group_of(k: Kernel) -> str:
    return GROUP.get(k.type, "memory")
#: scale of each feature (us per unit is reported per this many units)
UNIT = {"n": 1.0, "macs": 1e6, "pad": 1e6, "bytes": 1e6}
MODEL_NAME = "kernel-v1"
MODEL_NAME_CORRECTED = "kernel-v2"
#: kernels whose linear time the correction scales (the compute kernels of GROUP, in its order: the "type"
#: feature is the index here); the shape features it reads (:func:`shape_features`)
COMPUTE_TYPES = tuple(GROUP)
SHAPE_FEATURES = ("log_cin", "log_cout", "k", "depthwise", "log_out_pixels", "log_macs", "log_pad_macs",
                  "log_weight_bytes", "log_in_bytes", "type")
#: the forest: nn-Meter's regressor; leaves of at least 3 micro-benchmarks keep it from memorising noise
FOREST = {"n_estimators": 200, "min_samples_leaf": 3, "random_state": 0}


def model_name(params: dict) -> str:
    return MODEL_NAME_CORRECTED if (params or {}).get("correction") else MODEL_NAME


def llc_bytes() -> float:
    """This host's last-level cache (the largest data/unified cache in /sys, bytes)."""
    from pathlib import Path

    best = 0.0
    for idx in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if (idx / "type").read_text().strip() == "Instruction":
                continue
            size = (idx / "size").read_text().strip().upper()
            best = max(best, float(size.rstrip("KMB")) * (2**20 if size.endswith("M") else 1024))
        except (OSError, ValueError):
            continue
    return best or DEFAULT_LLC_BYTES


def phi(k: Kernel, dram: bool = False) -> dict:
    """{feature: value} of one kernel (MACs and bytes in millions); ``dram``: its model's weights exceed the LLC."""
    return {"n": 1.0, "macs": k.macs / 1e6, "pad": max(k.macs_padded - k.macs, 0.0) / 1e6, "bytes": k.bytes / 1e6,
            "dram": k.w_bytes / 1e6 if dram else 0.0}


def _in_dram(kernels: list, llc: Optional[float]) -> bool:
    return sum(k.w_bytes for k in kernels) > (llc or llc_bytes())


def design_row(kernels: Iterable[Kernel], llc: Optional[float] = None) -> list[float]:
    """The model's row of the design matrix: per (group, feature) the sum over its kernels, then 1 (per run)."""
    kernels = list(kernels)
    dram = _in_dram(kernels, llc)
    idx = {c: i for i, c in enumerate(COLUMNS)}
    row = [0.0] * len(COLUMNS)
    for k in kernels:
        f, g = phi(k, dram), group_of(k)
        for name in FEATURES[g]:
            row[idx[(g, name)]] += f[name]
        for name in SHARED:
            row[idx[("all", name)]] += f[name]
    row[idx[("run", "n")]] = 1.0
    return row


def fit(samples: list, *, ridge: float = 1e-4) -> dict:
    """Fit theta >= 0 on ``samples`` = [(kernels, measured_us), ...] (at least 3): non-negative least squares
    on the relative error, columns scaled to unit norm, a small ridge towards 0 for columns the samples barely
    determine. Returns {"theta": {type: {feature: us per unit}}, "run_us", "n_samples", "fit_median_abs_pct_err"}."""
    import numpy as np
    from scipy.optimize import nnls

    if len(samples) < 3:
        raise InputError(f"the kernel predictor needs at least 3 measured models, got {len(samples)}")
    llc = llc_bytes()
    A = np.array([design_row(k, llc) for k, _ in samples], dtype=float)
    y = np.array([float(t) for _, t in samples], dtype=float)
    if (y <= 0).any():
        raise InputError("measured latencies must be positive")
    Aw = A / y[:, None]
    scale = np.linalg.norm(Aw, axis=0)
    scale[scale == 0] = 1.0
    As = Aw / scale
    n = As.shape[1]
    As = np.vstack([As, math.sqrt(ridge) * np.eye(n)])
    b = np.concatenate([np.ones(len(y)), np.zeros(n)])
    x, _ = nnls(As, b, maxiter=50 * n)
    theta_vec = x / scale
    pred = A @ theta_vec
    return {"model": MODEL_NAME, "theta": _theta_dict(theta_vec), "run_us": float(theta_vec[-1]), "llc_bytes": llc,
            "n_samples": len(samples), "fit_median_abs_pct_err": float(np.median(np.abs(pred - y) / y) * 100)}


def _theta_dict(vec) -> dict:
    out: dict = {}
    for (t, f), v in zip(COLUMNS[:-1], vec[:-1]):
        out.setdefault(t, {})[f] = float(v)
    return out


def _theta_vec(params: dict) -> list:
    th = params.get("theta") or {}
    vec = [float(th.get(t, {}).get(f, 0.0)) for t, f in COLUMNS[:-1]]
    return vec + [float(params.get("run_us", 0.0))]


def _linear_per_kernel(kernels: list[Kernel], params: dict) -> list:
    th = params.get("theta") or {}
    dram = _in_dram(kernels, params.get("llc_bytes"))
    per = []
    for k in kernels:
        f, g = phi(k, dram), group_of(k)
        per.append((k, sum(float(th.get(g, {}).get(name, 0.0)) * f[name] for name in FEATURES[g])
                    + sum(float(th.get("all", {}).get(name, 0.0)) * f[name] for name in SHARED)))
    return per


def predict_us(kernels: list[Kernel], params: dict, detail: bool = False):
    """Predicted latency (us) of a model from its kernels; with ``detail`` also [(kernel, us)] per kernel.
    With a ``correction`` table in ``params`` (kernel-v2) every compute kernel's linear time is scaled by its
    learnt efficiency factor."""
    kernels = list(kernels)
    table = params.get("correction")
    if not detail and not table:
        return sum(a * b for a, b in zip(design_row(kernels, params.get("llc_bytes")), _theta_vec(params)))
    per = _linear_per_kernel(kernels, params)
    if table:
        factors = efficiency_factors([k for k, _ in per], table)
        per = [(k, t * f) for (k, t), f in zip(per, factors)]
    total = float(params.get("run_us", 0.0)) + sum(t for _, t in per)
    return (total, per) if detail else total


def shape_features(k: Kernel) -> list[float]:
    """The correction's view of a compute kernel (:data:`SHAPE_FEATURES`)."""
    pixels = k.out_bytes / k.cout if k.cout else 1.0
    return [math.log1p(k.cin), math.log1p(k.cout), float(k.k), float(k.groups > 1 and k.groups == k.cin),
            math.log1p(pixels), math.log1p(k.macs), math.log1p(max(k.macs_padded - k.macs, 0.0)),
            math.log1p(k.w_bytes), math.log1p(k.in_bytes), float(COMPUTE_TYPES.index(k.type))]


def correction_table(samples: list, params: dict) -> Optional[dict]:
    """The correction's training table from single-kernel micro-benchmarks ``samples`` = [(kernels, measured_us)]
    and the linear ``params`` fitted on them: for every sample with exactly one compute kernel, its shape
    features and ``log(t / linear time)``, where ``t`` is the measurement minus the linear time of everything
    else (per-run constant, layout and quantize kernels). None with fewer than 10 usable samples."""
    x, y = [], []
    for ks, us in samples:
        per = _linear_per_kernel(list(ks), params)
        compute = [(k, t) for k, t in per if k.type in COMPUTE_TYPES]
        if len(compute) != 1 or compute[0][1] <= 0:
            continue
        k, t_lin = compute[0]
        t = float(us) - float(params.get("run_us", 0.0)) - sum(t for kk, t in per if kk is not k)
        if t <= 0:
            continue
        x.append([round(v, 5) for v in shape_features(k)])
        y.append(round(math.log(t / t_lin), 5))
    if len(y) < 10:
        return None
    return {"features": list(SHAPE_FEATURES), "x": x, "y": y, "forest": dict(FOREST)}


_FORESTS: dict = {}


def _forest(table: dict):
    key = (len(table["y"]), round(sum(table["y"]), 6), round(sum(map(sum, table["x"])), 6))
    if key not in _FORESTS:
        from sklearn.ensemble import RandomForestRegressor

        if list(table.get("features", [])) != list(SHAPE_FEATURES):
            raise InputError("the calibration's kernel correction was fitted on other shape features; "
                             "recalibrate (benchmarks/costmodel/predictor_error.py --write-calibration)")
        _FORESTS[key] = RandomForestRegressor(**(table.get("forest") or FOREST)).fit(table["x"], table["y"])
    return _FORESTS[key]


def efficiency_factors(kernels: list[Kernel], table: dict) -> list[float]:
    """The learnt factor of each kernel (1 for kernels that are not compute kernels)."""
    idx = [i for i, k in enumerate(kernels) if k.type in COMPUTE_TYPES]
    out = [1.0] * len(kernels)
    if idx:
        pred = _forest(table).predict([shape_features(kernels[i]) for i in idx])
        for i, v in zip(idx, pred):
            out[i] = math.exp(float(v))
    return out


def errors_pct(pred: list, meas: list) -> dict:
    """Signed errors (%) and the summary the predictor is judged by: median |error|, the share within +-10%,
    the 90th percentile of |error|."""
    import numpy as np

    e = (np.array(pred, float) / np.array(meas, float) - 1.0) * 100
    a = np.abs(e)
    return {"n": int(len(e)), "median_abs_pct": float(np.median(a)) if len(a) else None,
            "p90_abs_pct": float(np.percentile(a, 90)) if len(a) else None,
            "within_10_pct": float((a <= 10).mean() * 100) if len(a) else None,
            "max_abs_pct": float(a.max()) if len(a) else None}


def band_text(key: str, band: Optional[dict], source: Optional[str] = None) -> str:
    """One sentence for a prediction's error band on this host; ``source`` names the measurement (default: the
    packaged calibration's, benchmarks/costmodel/predictor.md)."""
    if not band or band.get("p90_abs_pct") is None:
        return f"host: {key} error not measured"
    return (f"host: ±{band['p90_abs_pct']:.0f}% (90% of held-out architectures; median {band['median_abs_pct']:.0f}%, "
            f"{band['n']} models, {source or 'benchmarks/costmodel/predictor.md'})")
