"""Collect the run folder's stage records into one report dict (schema: docs/report-schema.md).

Every latency or memory figure carries ``source``: ``measured`` (with ``where``, process
repeats and timed runs) or ``predicted`` (with the cost model's name).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from .. import __version__
from ..runfolder import read_json

SCHEMA_VERSION = "edgeprune-report/1"


def _maybe(path: Path):
    return read_json(path) if path.is_file() else None


def _latency_block(entry: dict) -> dict:
    out = {}
    host = entry.get("host")
    if host:
        out["host"] = {
            "source": "measured", "where": "host", "machine": host.get("machine"),
            "repeats": host.get("repeats"), "runs": host.get("runs"), "threads": host.get("threads"),
            "p50_ms": host.get("p50_ms"), "p90_ms": host.get("p90_ms"), "p99_ms": host.get("p99_ms"),
            "peak_memory_mb": host.get("peak_memory_mb"), "model_footprint_mb": host.get("model_footprint_mb"),
            "runtime_footprint_mb": host.get("runtime_footprint_mb"), "runtime": host.get("runtime"),
            "runtime_version": host.get("runtime_version"),
        }
    pred = entry.get("predicted")
    if pred:
        out["predicted"] = {"source": "predicted", "model": pred.get("model"), "latency_ms": pred.get("latency_ms"),
                            "peak_memory_mb": pred.get("peak_memory_mb")}
    dev = entry.get("device")
    if dev:
        out["device"] = {"source": "measured", "where": dev.get("where"), "p50_ms": dev.get("p50_ms"),
                         "p90_ms": dev.get("p90_ms"), "model_footprint_mb": dev.get("model_footprint_mb"),
                         "runs": dev.get("runs")}
    return out


def build_report(run_dir: Path, target_name: str | None = None) -> dict:
    run = Path(run_dir)
    cfg = read_json(run / "config.json")
    train = read_json(run / "train.json")
    prune = _maybe(run / "prune.json") or {}
    compact = _maybe(run / "compact.json") or {}
    finetune = _maybe(run / "finetune.json") or {}
    export = _maybe(run / "export.json") or {"artifacts": {}}
    stages = _maybe(run / "stages.json") or {}
    tname = target_name or cfg["target"]
    from ..targets import load_target

    target = load_target(tname)
    bench = _maybe(run / "bench" / f"{target.name}.json") or {"artifacts": {}}
    budget = _maybe(run / "budget" / f"{target.name}.json")
    other_targets = sorted(p.stem for p in (run / "bench").glob("*.json")) if (run / "bench").is_dir() else []

    artifacts = []
    for fmt, art in export["artifacts"].items():
        row = {"format": fmt, **{k: art.get(k) for k in ("ok", "path", "size_bytes", "metric_name", "metric", "torch_metric",
                                                          "metric_drop", "max_abs_diff", "rel_diff", "runtime", "error",
                                                          "within_tolerance", "input_dtype", "quant")}}
        row["latency"] = _latency_block(bench["artifacts"].get(fmt, {}))
        artifacts.append(row)

    per_target = {}
    for t in other_targets:
        bt = read_json(run / "bench" / f"{t}.json")
        per_target[t] = {fmt: _latency_block(e) for fmt, e in bt["artifacts"].items()}

    metric_name = cfg.get("metric") or ("accuracy" if train["task"] == "classification" else "psnr")
    return {
        "schema": SCHEMA_VERSION,
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "edgeprune_version": __version__,
        "run": run.resolve().name,
        "config": cfg,
        "target": target.to_dict(),
        "dataset": train["dataset"],
        "task": train["task"],
        "metric_name": metric_name,
        "model": {
            "arch": train["arch"],
            "dense": {**train["cost"], "test_metric": train["test_metric"]},
            "compact": {
                "params": compact.get("params"), "macs": compact.get("macs"),
                "test_metric_before_finetune": compact.get("test_metric_before_finetune"),
                "test_metric": finetune.get("test_metric"),
                "verification": compact.get("verification"),
            },
            "groups": train["graph"]["groups"],
        },
        "method": prune,
        "training": {"dense": train["history"], "finetune": finetune.get("history", [])},
        "artifacts": artifacts,
        "latency_per_target": per_target,
        "budget": budget,
        "stage_seconds": {k: v.get("seconds") for k, v in stages.items()},
    }
