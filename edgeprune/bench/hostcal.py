"""Calibrate the cost model on THIS host: the built-in models, exported to all four artifacts, measured.

The suite is every registered built-in model (``edgeprune.models.MODELS``) at its default widths on an 8x8
input (the digits default) and at default and half widths on a 28x28 input (Fashion-MNIST sized), exported
with :func:`edgeprune.export.export_all` (ONNX fp32/INT8, TFLite fp32/INT8) and measured with
:func:`edgeprune.bench.host.measure_host` (fresh processes, 1 thread, batch 1). The measurements fit one set
of factors per runtime and precision (``onnxruntime-fp32``, ``onnxruntime-int8``, ``tflite-fp32``,
``tflite-int8``) with :func:`edgeprune.bench.costfit.fit_factors`.

``calibrate_host()`` (``edgeprune calibrate --host``) runs a quick version (one configuration per model, one
process per artifact) and caches the result per host fingerprint in the user cache directory, where
:func:`edgeprune.bench.costmodel.load_calibration` finds it. ``benchmarks/costmodel/host_error.py`` runs the
full suite and reports the leave-one-model-out error.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path
from typing import Callable, Optional

from ..errors import InputError
from .hostspec import (  # noqa: F401  (re-exported: callers read the host facts from here too)
    cache_dir, cached_calibration_path, cpu_info, fingerprint, host_spec, l2_cache_kb, simd_of,
)

ARTIFACTS = ("onnx", "onnx-int8", "tflite", "tflite-int8")
#: artifact -> calibration key (runtime-dtype)
KEY_OF = {"onnx": "onnxruntime-fp32", "onnx-int8": "onnxruntime-int8", "tflite": "tflite-fp32",
          "tflite-int8": "tflite-int8"}
SHAPES = {"8x8": (1, 8, 8), "28x28": (1, 28, 28)}


# ------------------------------------------------------------------------------------------ this host


def suite(quick: bool = False, models: Optional[list] = None) -> list[dict]:
    """The built-in models to calibrate on (all, or ``models``): name, model, input shape, options, family
    (for the hold-out). ``quick``: one configuration per model (8x8 input, default widths)."""
    from ..models import MODELS, build_model

    unknown = sorted(set(models or []) - set(MODELS))
    if unknown:
        raise InputError(f"unknown built-in model(s) {unknown}; choose from {sorted(MODELS)}")
    rows = []
    for name in sorted(models or MODELS):
        configs = [("8x8", "w1")] if quick else [("8x8", "w1"), ("28x28", "w1"), ("28x28", "w0.5")]
        for shape, width in configs:
            opts = _half_width_options(name) if width == "w0.5" else {}
            rows.append({"name": f"{name}-{shape}-{width}", "model": name, "shape": SHAPES[shape],
                         "options": opts, "family": name})
    for r in rows:  # fail early on a model that does not build at this shape
        build_model(r["model"], r["shape"], 10, **r["options"])
    return rows


def _half_width_options(name: str) -> dict:
    """The model's width options halved (a stand-in for a pruned model); {} when it has none."""
    import inspect

    from ..models import MODELS

    out = {}
    for p in inspect.signature(MODELS[name]).parameters.values():
        if p.name in ("widths", "hidden") and isinstance(p.default, tuple):
            out[p.name] = tuple(max(1, int(w) // 2) for w in p.default)
        elif p.name in ("merge",) and isinstance(p.default, int):
            out[p.name] = max(1, p.default // 2)
    return out


def export_suite(rows: list[dict], workdir, *, formats=ARTIFACTS, progress: Callable = print) -> list[dict]:
    """Export each row's model (random init, seed 0) with edgeprune.export; adds ``artifacts`` {fmt: path}.

    Rows whose artifacts already exist in ``workdir/<name>/`` (same export.json) are reused."""
    import numpy as np
    import torch

    from ..export import FILENAMES, export_all
    from ..models import build_model, model_task

    workdir = Path(workdir)
    for r in rows:
        out = workdir / r["name"]
        done = out / "export.json"
        if done.is_file():
            res = json.loads(done.read_text())["artifacts"]
        else:
            torch.manual_seed(0)
            model = build_model(r["model"], r["shape"], 10, **r["options"]).eval()
            rng = np.random.default_rng(0)
            x = rng.random((64, *r["shape"]), dtype=np.float32)
            task = model_task(r["model"])
            res = export_all(model, torch.zeros(1, *r["shape"]), calib=x[:32], test_x=x,
                             test_y=rng.integers(0, 10, 64) if task == "classification" else None,
                             out_dir=out, formats=list(formats), task=task, target_x86=True,
                             speed_check=False)  # fmt: skip
        r["artifacts"] = {f: str(out / FILENAMES[f]) for f, e in res.items() if e.get("ok")}
        failed = [f for f, e in res.items() if not e.get("ok")]
        progress(f"exported {r['name']}: {', '.join(r['artifacts'])}" + (f" (failed: {failed})" if failed else ""))
    return rows


def measure_suite(rows: list[dict], *, repeats: int = 3, runs: int = 50, warmup: int = 10,
                  progress: Callable = print) -> list[dict]:
    """measure_host for every artifact of every row, artifacts of one model interleaved; adds ``measured``."""
    from .host import measure_host

    for r in rows:
        r["measured"] = {}
        for fmt, path in r["artifacts"].items():
            m = measure_host(path, threads=1, runs=runs, warmup=warmup, repeats=repeats)
            r["measured"][fmt] = {k: m.get(k) for k in ("p50_ms", "p90_ms", "p50_ms_per_repeat", "p50_spread_pct",
                                                      "peak_memory_mb", "runtime_footprint_mb",
                                                      "model_footprint_mb", "runtime_version", "model_size_mb")}
        progress(f"measured {r['name']}: " + ", ".join(f"{f} {m['p50_ms'] * 1e3:.1f} us"
                                                       for f, m in r["measured"].items()))
    return rows


def samples_for(rows: list[dict], fmt: str) -> list[tuple]:
    """(onnx graph, measured p50 ms, measured model footprint MiB) of ``fmt`` for fit_factors.

    The graph is the ONNX file the prediction reads for that artifact (TFLite reuses the same model's ONNX:
    fp32 for tflite, the QDQ graph for tflite-int8 when it exported, else fp32)."""
    from .costmodel import graph_for_artifact

    out = []
    for r in rows:
        m = r.get("measured", {}).get(fmt)
        g = graph_for_artifact(r["artifacts"], fmt)
        if m and g:
            out.append((g, m["p50_ms"], m["model_footprint_mb"]))
    return out


def fit_all(rows: list[dict], *, exclude_family: Optional[str] = None) -> dict:
    """{key: factors} for the four runtime-precision keys, optionally without one model family."""
    from .costfit import fit_factors
    from .costmodel import fuses_add, host_profile, runtime_of

    prof = host_profile()
    keep = [r for r in rows if r["family"] != exclude_family]
    out = {}
    for fmt, key in KEY_OF.items():
        s = samples_for(keep, fmt)
        dtype = "int8" if fmt.endswith("int8") else "fp32"
        if len(s) >= 3:
            out[key] = fit_factors(s, prof, dtype=dtype, fuse_add=fuses_add(runtime_of(fmt), dtype))
    return out


def fit_kernel_factors(rows: list[dict]) -> dict:
    """{key: kernel-predictor factors} (:mod:`.kernels`) from the measured rows, each with the error band
    measured leave-one-family-out on these rows (``heldout``); keys with fewer than 3 models are left out."""
    from . import fusion, kernels

    out = {}
    for fmt, key in KEY_OF.items():
        rt, dtype = ("tflite" if fmt.startswith("tflite") else "onnxruntime"), ("int8" if fmt.endswith("int8") else "fp32")
        samples = []
        for r in rows:
            m, path = r.get("measured", {}).get(fmt), r["artifacts"].get(fmt)
            if m and path:
                samples.append((r["family"], fusion.kernels_for(path, rt, dtype)[0], m["p50_ms"] * 1e3))
        if len(samples) < 3:
            continue
        params = kernels.fit([(k, t) for _, k, t in samples])
        pred, meas = [], []
        for fam in sorted({f for f, _, _ in samples}):
            train = [(k, t) for f, k, t in samples if f != fam]
            if len(train) < 3:
                continue
            p = kernels.fit(train)
            for f, k, t in samples:
                if f == fam:
                    pred.append(kernels.predict_us(k, p))
                    meas.append(t)
        params["heldout"] = kernels.errors_pct(pred, meas) if pred else {}
        out[key] = params
    return out


def calibration_dict(factors: dict, note: str) -> dict:
    """A calibration file's content for this host: factors, host spec and fingerprint."""
    from .costmodel import MODEL_NAME

    spec = host_spec()
    day = _dt.date.today().isoformat()
    for f in factors.values():
        f.setdefault("fitted", day)
        f.setdefault("note", note)
    return {"version": 2, "model": MODEL_NAME, "fingerprint": fingerprint(spec),
            "host": {"cpu": spec["cpu"], "cores": spec["cores"], "platform": platform.platform(), "spec": spec},
            "factors": factors}


def calibrate_host(*, out=None, workdir=None, repeats: int = 1, runs: int = 30, models: Optional[list] = None,
                   progress: Callable = print) -> dict:
    """Quick calibration of this host on the built-in models (8x8 inputs, 1 process per artifact; ``models``
    restricts the set, at least 3 are needed).

    Writes the calibration to ``out`` (default: the user cache, see :func:`cached_calibration_path`), where
    ``load_calibration`` picks it up for this host. Returns {"path", "calibration", "seconds"}."""
    import tempfile
    import time

    from ..runfolder import atomic_write_text

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeprune-hostcal-") as td:
        rows = export_suite(suite(quick=True, models=models), Path(workdir or td), progress=progress)
        measure_suite(rows, repeats=repeats, runs=runs, warmup=5, progress=progress)
        factors = fit_all(rows)
        kfactors = fit_kernel_factors(rows)
    if not factors:
        raise InputError("host calibration failed: no artifact could be measured; check onnxruntime/ai-edge-litert")
    cal = calibration_dict(factors, f"edgeprune calibrate --host: {len(rows)} built-in models, {repeats} "
                                    f"process(es) x {runs} runs per artifact")
    if kfactors:
        cal["kernel_factors"] = kfactors
    p = Path(out) if out is not None else cached_calibration_path(cal["fingerprint"])
    atomic_write_text(p, json.dumps(cal, indent=1, sort_keys=True) + "\n")
    return {"path": str(p), "calibration": cal, "seconds": time.perf_counter() - t0}
