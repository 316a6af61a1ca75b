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


def predict_us(kernels: list[Kernel], params: dict, detail: bool = False):
    """Predicted latency (us) of a model from its kernels; with ``detail`` also [(kernel, us)] per kernel."""
    vec = _theta_vec(params)
    llc = params.get("llc_bytes")
    total = sum(a * b for a, b in zip(design_row(kernels, llc), vec))
    if not detail:
        return total
    th = params.get("theta") or {}
    dram = _in_dram(kernels, llc)
    per = []
    for k in kernels:
        f, g = phi(k, dram), group_of(k)
        per.append((k, sum(float(th.get(g, {}).get(name, 0.0)) * f[name] for name in FEATURES[g])
                    + sum(float(th.get("all", {}).get(name, 0.0)) * f[name] for name in SHARED)))
    return total, per


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


def band_text(key: str, band: Optional[dict]) -> str:
    """One sentence for a prediction's error band on this host."""
    if not band or band.get("p90_abs_pct") is None:
        return f"host: {key} error not measured"
    return (f"host: ±{band['p90_abs_pct']:.0f}% (90% of held-out architectures; median {band['median_abs_pct']:.0f}%, "
            f"{band['n']} models, benchmarks/costmodel/predictor.md)")
