"""Collect the run folder's stage records into one report dict (schema: docs/report-schema.md).

Every latency or memory figure carries ``source``: ``measured`` (with ``where``, process
repeats and timed runs) or ``predicted`` (with the cost model's name).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from ..version import __version__
from ..runfolder import read_json

SCHEMA_VERSION = "edgeprune-report/1"


def _maybe(path: Path):
    return read_json(path) if path.is_file() else None


def _host_block(host: dict) -> dict:
    return {
        "source": "measured", "where": "host", "machine": host.get("machine"),
        "repeats": host.get("repeats"), "runs": host.get("runs"), "threads": host.get("threads"),
        "p50_ms": host.get("p50_ms"), "p90_ms": host.get("p90_ms"), "p99_ms": host.get("p99_ms"),
        "peak_memory_mb": host.get("peak_memory_mb"), "model_footprint_mb": host.get("model_footprint_mb"),
        "runtime_footprint_mb": host.get("runtime_footprint_mb"), "runtime": host.get("runtime"),
        "runtime_version": host.get("runtime_version"),
    }


def _predicted_block(pred: dict, measured: list) -> dict:
    from ..bench.budget import predicted_p90

    tail = predicted_p90(pred, measured)
    return {"source": "predicted", "model": pred.get("model"), "latency_ms": pred.get("latency_ms"),
            "p90_ms": tail[0] if tail else None, "p90_how": tail[1] if tail else None,
            "peak_memory_mb": pred.get("peak_memory_mb"), "peak_memory_how": pred.get("peak_memory_how"),
            "tensor_mb": pred.get("tensor_mb"), "runtime": pred.get("runtime"), "dtype": pred.get("dtype"),
            "threads": pred.get("threads"), "basis": pred.get("basis"), "how": pred.get("how"),
            "uncertainty": pred.get("uncertainty"), "calibration": pred.get("calibration"),
            "error_band": pred.get("error_band"), "latency_band_ms": pred.get("latency_band_ms"),
            "band_label": band_label(pred)}


def band_label(pred: dict) -> str | None:
    """The prediction's error band in a few characters: "±9%" (the kernel predictor's measured p90 error on
    held-out architectures, host) or the "±2x" of its uncertainty sentence (targets); None when it has none."""
    import re

    band = pred.get("error_band") or {}
    if band.get("p90_abs_pct") is not None:
        return f"±{band['p90_abs_pct']:.0f}%"
    m = re.search(r"±\s*[0-9.]+\s*(?:%|x)", str(pred.get("uncertainty") or ""))
    return m.group(0).replace(" ", "") if m else None


def _device_block(dev: dict) -> dict:
    return {"source": "measured", "where": dev.get("where"), "p50_ms": dev.get("p50_ms"),
            "p90_ms": dev.get("p90_ms"), "p90_from": dev.get("p90_from"),
            "model_footprint_mb": dev.get("model_footprint_mb"), "peak_memory_mb": dev.get("peak_memory_mb"),
            "runtime_footprint_mb": dev.get("runtime_footprint_mb"), "runs": dev.get("runs"),
            "repeats": dev.get("repeats"), "threads": dev.get("threads"), "runtime": dev.get("runtime"),
            "machine": dev.get("machine")}


def _latency_block(entry: dict) -> dict:
    """host (measured), predicted (cost model, p90 from the measured tail ratio) and device (measured) blocks."""
    out = {}
    if entry.get("host"):
        out["host"] = _host_block(entry["host"])
    if entry.get("predicted"):
        measured = [entry[k] for k in ("device", "host") if entry.get(k)]
        out["predicted"] = _predicted_block(entry["predicted"], measured)
    if entry.get("device"):
        out["device"] = _device_block(entry["device"])
    return out


def _cost_model(bench: dict) -> dict | None:
    """Which cost model, calibrated where, how accurate on the host, how uncertain on the target."""
    pred = next((e["predicted"] for e in bench["artifacts"].values() if e.get("predicted")), None)
    if not pred:
        return None
    cal = pred.get("calibration") or {}
    return {"model": pred.get("model"), "calibrated_on": cal.get("host_cpu"),
            "calibration_matches_this_host": cal.get("matches_this_host"), "calibration_file": cal.get("where"),
            "host_error_median_abs_pct": cal.get("host_error_median_abs_pct") or {},
            "kernel_error_band_pct": cal.get("kernel_error_band_pct") or {},
            "target_basis": pred.get("basis"), "target_how": pred.get("how"), "uncertainty": pred.get("uncertainty")}


def _group_labels(arch: dict, groups: list) -> dict:
    """Readable names for coupled groups ("0.0" -> "Conv2d 0.0 (3x3)"): the layer type of the group's name."""
    try:
        from ..models import build_arch

        mods = dict(build_arch(arch).named_modules())
    except Exception:  # noqa: BLE001 - labels are cosmetic; fall back to the module paths
        return {}
    out = {}
    for g in groups:
        m = mods.get(g["name"])
        if m is None:
            continue
        ks = getattr(m, "kernel_size", None)
        k = f" {'x'.join(map(str, ks))}" if ks else ""
        out[g["name"]] = f"{type(m).__name__}{k} [{g['name']}]"
    return out


def _sibling_runs(run: Path, cfg: dict, metric_name: str) -> list:
    """Other run folders next to this one with the same model, dataset and metric (other methods / budgets)."""
    out = []
    for d in sorted(run.parent.iterdir()) if run.parent.is_dir() else []:
        if d.resolve() == run.resolve() or not (d / "finetune.json").is_file():
            continue
        try:
            c, t = read_json(d / "config.json"), read_json(d / "train.json")
            comp, ft = read_json(d / "compact.json"), read_json(d / "finetune.json")
        except (OSError, ValueError):
            continue
        same = (c.get("model"), c.get("dataset")) == (cfg.get("model"), cfg.get("dataset"))
        if not same or t.get("metric_name", metric_name) != metric_name:
            continue
        out.append({"run": d.name, "method": (c.get("method") or {}).get("name"), "dense_macs": t["cost"]["macs"],
                    "macs": comp.get("macs"), "test_metric": ft.get("test_metric")})
    return out


def _with_plots(prune: dict) -> dict:
    """The prune record; a history without a plot declaration (run folders written before methods declared their
    curves) gets the one its method's class declares (``PruningMethod.plots``), if any."""
    h = prune.get("history")
    if not isinstance(h, dict) or "plots" in h or not prune.get("method"):
        return prune
    from ..methods.base import METHODS

    plots = getattr(METHODS.get(prune["method"]), "plots", None)
    return {**prune, "history": {**h, "plots": plots}} if plots else prune


def _limit_block(run: Path, train: dict, compact: dict, finetune: dict) -> dict | None:
    """The build guard's predicted one-shot limit (limit.json) next to what the build achieved."""
    lim = _maybe(run / "limit.json")
    if not lim:
        return None
    dense = train["cost"]
    frac = lambda k: 1 - compact[k] / dense[k] if compact.get(k) and dense.get(k) else None  # noqa: E731
    after = finetune.get("test_metric")
    return {"source": "predicted", "s_star": lim.get("s_star"), "note": lim.get("note"), "kind": lim.get("kind"),
            "epsilon": lim.get("epsilon"), "seconds": lim.get("seconds"), "settings": lim.get("settings"),
            "requested_removal": lim.get("requested_removal"),
            "beyond": lim.get("beyond"), "achieved": {"macs_removed": frac("macs"), "params_removed": frac("params"),
            "metric_drop": None if after is None else train["test_metric"] - after}}


def _pruning_target(run: Path) -> dict | None:
    """How the pruning target was set (bench/planning.py's target.json; None when it was given)."""
    d = _maybe(run / "target.json")
    if d:
        d.pop("key", None)
    return d


def build_report(run_dir: Path, target_name=None) -> dict:
    """The report dict of a run folder for a target (a Target, a name/path, or None = the run's)."""
    run = Path(run_dir)
    cfg = read_json(run / "config.json")
    train = read_json(run / "train.json")
    prune = _maybe(run / "prune.json") or {}
    compact = _maybe(run / "compact.json") or {}
    finetune = _maybe(run / "finetune.json") or {}
    export = _maybe(run / "export.json") or {"artifacts": {}}
    stages = _maybe(run / "stages.json") or {}
    tname = target_name if isinstance(target_name, str) else cfg["target"]
    from ..targets import Target, load_target

    target = target_name if isinstance(target_name, Target) else load_target(tname)
    bench = _maybe(run / "bench" / f"{target.name}.json") or {"artifacts": {}}
    budget = _maybe(run / "budget" / f"{target.name}.json")
    other_targets = sorted(p.stem for p in (run / "bench").glob("*.json")) if (run / "bench").is_dir() else []

    artifacts = []
    for fmt, art in export["artifacts"].items():
        row = {"format": fmt, **{k: art.get(k) for k in ("ok", "path", "size_bytes", "metric_name", "metric", "torch_metric",
                                                          "metric_drop", "max_abs_diff", "rel_diff", "runtime", "error",
                                                          "within_tolerance", "input_dtype", "quant",
                                                          "outputs")}}
        row["latency"] = _latency_block(bench["artifacts"].get(fmt, {}))
        artifacts.append(row)

    per_target = {}
    for t in other_targets:
        bt = read_json(run / "bench" / f"{t}.json")
        per_target[t] = {fmt: _latency_block(e) for fmt, e in bt["artifacts"].items()}

    metric_name = train.get("metric_name") or cfg.get("metric") or ("accuracy" if train["task"] == "classification" else "psnr")
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
            "group_labels": _group_labels(train["arch"], train["graph"]["groups"]),
        },
        "method": _with_plots(prune),
        "training": {"dense": train["history"], "finetune": finetune.get("history", [])},
        "artifacts": artifacts,
        "latency_per_target": per_target,
        "cost_model": _cost_model(bench),
        "sibling_runs": _sibling_runs(run, cfg, metric_name),
        "budget": budget,
        "pruning_limit": _limit_block(run, train, compact, finetune),
        "pruning_target": (None if (cfg.get("method") or {}).get("flops_keep") and not (run / "search.json").is_file()
                           else _pruning_target(run)),
        "search": _maybe(run / "search.json"),
        "reconstructions": "reconstructions.png" if (run / "reconstructions.png").is_file() else None,
        "stage_seconds": {k: v.get("seconds") for k, v in stages.items()},
    }
