"""Measure a model on this machine: the standalone runner in several fresh processes, medians reported."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import InputError

RUNNER = Path(__file__).with_name("runner.py")

# statistics whose median over repeats is reported
STAT_KEYS = (
    "import_ms", "init_ms", "first_inference_ms", "warmup_avg_ms", "avg_ms", "std_ms", "min_ms", "max_ms",
    "p50_ms", "p90_ms", "p99_ms", "runtime_footprint_mb", "peak_memory_mb", "model_footprint_mb",
)


def run_runner(cmd_prefix: list, path: str, *, threads: int, runs: int, warmup: int, json_path: str,
               timeout: float = 600, env=None) -> dict:
    """Run ``cmd_prefix + [runner.py, path, ...]`` and return its JSON (raises InputError on failure)."""
    cmd = list(cmd_prefix) + [str(RUNNER), str(path), "--runs", str(runs), "--warmup", str(warmup),
                              "--threads", str(threads), "--json", json_path]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if p.returncode != 0:
        msg = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"benchmark of {path} failed (exit {p.returncode}): {msg}")
    with open(json_path) as f:
        return json.load(f)


def summarize(raw: list[dict]) -> dict:
    """Median over repeats of each statistic; identity fields from the first repeat."""
    first = raw[0]
    out = {k: first[k] for k in ("model", "model_size_mb", "format", "runtime", "runtime_version", "provider",
                                 "threads", "inputs", "runs", "warmup") if k in first}
    for k in STAT_KEYS:
        vals = [r[k] for r in raw if r.get(k) is not None]
        if vals:
            out[k] = float(statistics.median(vals))
    out["p50_ms_per_repeat"] = [r["p50_ms"] for r in raw]
    spread = max(out["p50_ms_per_repeat"]) / max(min(out["p50_ms_per_repeat"]), 1e-12) - 1.0
    out["p50_spread_pct"] = 100.0 * spread
    return out


def measure_host(path, *, threads: int = 1, runs: int = 50, warmup: int = 10, repeats: int = 3,
                 python: str | None = None) -> dict:
    """Benchmark ``path`` (.onnx/.tflite) on this host in ``repeats`` fresh processes.

    Returns the median over repeats of every statistic of :mod:`edgeprune.bench.runner`, the raw
    per-repeat results under ``"raw"`` (each with its ``runs_ms``), and the label
    ``{"source": "measured", "where": "host", "machine": ..., "repeats": ..., "runs": ...}``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path} not found; export the model first")
    if path.suffix.lower() not in (".onnx", ".tflite"):
        raise InputError(f"model file {path} must end in .onnx or .tflite")
    if repeats < 1 or runs < 1:
        raise InputError("repeats and runs must be >= 1")
    raw = []
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="edgeprune-bench-") as td:
        for i in range(repeats):
            raw.append(run_runner([python or sys.executable], str(path), threads=threads, runs=runs,
                                  warmup=warmup, json_path=os.path.join(td, f"r{i}.json"), env=env))
    out = summarize(raw)
    out.update({"source": "measured", "where": "host", "machine": raw[0]["machine"], "repeats": repeats,
                "runs": runs, "raw": raw})
    return out
