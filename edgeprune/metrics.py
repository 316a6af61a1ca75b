"""Task metrics shared by training, export parity and the report.

Each metric takes numpy arrays (model outputs, targets) and returns a float where higher
is better, so callers can compare artifacts without knowing the task.
"""

from __future__ import annotations

import numpy as np

METRICS = {}


def register_metric(name: str, unit: str):
    def deco(fn):
        fn.metric_name, fn.unit = name, unit
        METRICS[name] = fn
        return fn

    return deco


@register_metric("accuracy", "%")
def accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Top-1 accuracy in percent; ``outputs`` are logits or scores of shape (N, classes)."""
    pred = np.asarray(outputs).reshape(len(targets), -1).argmax(axis=1)
    return float((pred == np.asarray(targets)).mean() * 100.0)


@register_metric("psnr", "dB")
def psnr(outputs: np.ndarray, targets: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB over the whole batch (reconstruction tasks)."""
    out = np.asarray(outputs, dtype=np.float64).reshape(np.asarray(targets).shape)
    ref = np.asarray(targets, dtype=np.float64)
    rng = float(ref.max() - ref.min()) if data_range is None else data_range
    mse = float(np.mean((out - ref) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(rng * rng / mse))


IN_PROCESS_PREFIX = "api:"  # metrics passed as callables to the Python API: this process only


def register_in_process(fn) -> str:
    """Register a metric callable passed to the Python API; return the name the config stores.

    The name carries a hash of the function's code and constants, so two different callables (two
    lambdas, or an edited function) get different names and a changed metric reruns the stages."""
    import hashlib

    code = getattr(fn, "__code__", None)
    blob = repr((code.co_code, code.co_consts)) if code is not None else repr(fn)
    name = f"{IN_PROCESS_PREFIX}{getattr(fn, '__name__', 'metric')}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"
    METRICS[name] = fn
    return name


def get_metric(name: str):
    """A registered metric, or a user's ``file.py:function(outputs, targets) -> float`` (higher is better)."""
    from .errors import ConfigError

    if name.startswith(IN_PROCESS_PREFIX) and name not in METRICS:
        raise ConfigError(f"this run used an in-process metric ({name[len(IN_PROCESS_PREFIX):]}, passed to the Python "
                          "API); rerun it through the Python API, or rebuild with --metric file.py:function")
    if ":" in name and name not in METRICS:
        from .imports import load_callable

        METRICS[name] = load_callable(name, what="metric")
    try:
        return METRICS[name]
    except KeyError:
        raise ConfigError(f"unknown metric {name!r}; choose one of {sorted(n for n in METRICS if ':' not in n)} "
                          "or give file.py:function") from None


def metric_unit(name: str) -> str:
    """The metric's unit ("%", "dB"); a user metric may declare one as a ``unit`` attribute, else ""."""
    return str(getattr(get_metric(name), "unit", ""))
