"""Does a build meet its target's budget? One line per budgeted quantity, with concrete advice.

Evidence (a dict) for the artifact chosen for the target::

    {
      "artifact": "tflite-int8",                              # optional, used in advice
      "latency_p50_ms": [{"value": 3.1, "source": "measured", "where": "pi@rpi"},   # one dict or a list:
                         {"value": 2.4, "source": "predicted"}],                    # the best source wins
      "latency_p90_ms": ...,
      "peak_memory_mb": ...,     # the MODEL's memory: measured model_footprint_mb, or predicted peak_memory_mb
      "model_size_mb": 1.2,      # artifact file size (MiB)
      "metric": 97.2, "dense_metric": 98.1, "metric_name": "accuracy",   # higher is better
      "macs": 1.1e6, "dense_macs": 2.3e6,                     # optional: checks flops_keep
      "latency_breakdown": {"fixed_ms": 0.05, "scalable_ms": 0.4},   # optional, from costmodel.predict
      "metric_mismatch": "...",  # optional: why metric and dense_metric cannot be compared (line passed=None)
      "int8": {"metric_drop": 0.4, "tolerance": 1.0, "calib_samples": 256},  # INT8 artifact: adds the line
                                                                             # int8_accuracy_drop
    }

Sources rank "measured on device" > "predicted" > "measured on host" (a host is not the device; the cost
model predicts the target from its profile's sustained throughput and carries an uncertainty statement).
:func:`evidence_from` builds this dict from ``measure_host`` / ``measure_remote`` / ``measure_adb`` /
``predict`` results.
"""

from __future__ import annotations

from typing import Any, Optional

from ..errors import InputError

SOURCE_RANK = {"measured on device": 3, "predicted": 2, "measured on host": 1}


def _norm_source(ev: dict) -> str:
    s = str(ev.get("source", "")).strip().lower()
    where = str(ev.get("where", "")).strip().lower()
    if s in SOURCE_RANK:
        return s
    if s == "measured":
        return "measured on host" if where in ("", "host", "localhost") else "measured on device"
    if s.startswith("predict"):
        return "predicted"
    raise InputError(f"evidence source {ev.get('source')!r} is unknown; use 'measured' (with 'where') or 'predicted'")


def _best(item) -> Optional[dict]:
    """The best-sourced candidate among one or several evidence dicts (or a bare number = unknown source)."""
    if item is None:
        return None
    cands = item if isinstance(item, (list, tuple)) else [item]
    best = None
    for c in cands:
        if c is None:
            continue
        if isinstance(c, (int, float)):
            c = {"value": float(c), "source": "measured on host"}
        if c.get("value") is None:
            continue
        src = _norm_source(c)
        cand = {"value": float(c["value"]), "source": src, "where": c.get("where")}
        if best is None or SOURCE_RANK[src] > SOURCE_RANK[best["source"]]:
            best = cand
    return best


def _line(name, budget, value, source, passed, advice, **extra) -> dict:
    margin = None
    if budget is not None and value is not None and budget > 0:
        margin = (budget - value) / budget  # fraction of the budget left (negative = over)
    return {"name": name, "budget": budget, "value": value, "source": source, "passed": passed,
            "margin": margin, "advice": advice, **extra}


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _latency_advice(name, budget, value, breakdown, macs_ratio) -> str:
    if value <= budget:
        return f"meets it with {_pct((budget - value) / budget)} headroom"
    fixed_frac = 0.0
    if breakdown and breakdown.get("fixed_ms") is not None and breakdown.get("scalable_ms") is not None:
        tot = breakdown["fixed_ms"] + breakdown["scalable_ms"]
        fixed_frac = breakdown["fixed_ms"] / tot if tot > 0 else 0.0
    keep = (budget / value - fixed_frac) / (1.0 - fixed_frac) if fixed_frac < 1 else -1
    if keep <= 0.02:
        return (f"over by {_pct(value / budget - 1)} and the cost model puts {_pct(fixed_frac)} of the time in "
                "per-operator overhead that pruning does not remove: use fewer layers/ops, a faster runtime or "
                "a faster target")
    why = (f" (cost model: {_pct(fixed_frac)} of the time is per-op overhead)" if fixed_frac > 0
           else " (assuming latency scales with FLOPs)")
    msg = f"needs ~{_pct(1 - keep)} fewer FLOPs{why}"
    if macs_ratio is not None:
        msg += f": keep <= {keep * macs_ratio:.2f} of the dense model's MACs (now {macs_ratio:.2f})"
    if keep < 0.3:
        msg += "; or INT8 / a faster target, pruning that hard will cost accuracy"
    return msg


def check_budget(target, evidence: dict) -> dict:
    """Compare ``evidence`` with ``target``'s budget (a Target, name or path); see the module docstring."""
    from ..targets import Target, load_target

    t = target if isinstance(target, Target) else load_target(target)
    if not isinstance(evidence, dict):
        raise InputError("evidence must be a dict (see edgeprune.bench.budget); build it with evidence_from()")
    b = t.budget
    art = evidence.get("artifact") or ""
    macs, dense = evidence.get("macs"), evidence.get("dense_macs")
    macs_ratio = macs / dense if macs and dense else None
    lines = []

    if b.flops_keep is not None:
        if macs_ratio is None:
            lines.append(_line("flops_keep", b.flops_keep, None, None, None,
                               "no evidence: give 'macs' and 'dense_macs'"))
        else:
            ok = macs_ratio <= b.flops_keep + 1e-9
            adv = ("meets it" if ok else
                   f"prune more: {macs_ratio:.2f} of the dense MACs kept, the target allows {b.flops_keep:.2f} "
                   f"(remove another {_pct(1 - b.flops_keep / macs_ratio)} of the current MACs)")
            lines.append(_line("flops_keep", b.flops_keep, macs_ratio, "computed", ok, adv))

    for key in ("latency_p50_ms", "latency_p90_ms"):
        bud = getattr(b, key)
        if bud is None:
            continue
        ev = _best(evidence.get(key))
        if ev is None:
            lines.append(_line(key, bud, None, None, None, "no evidence: measure it on the device or predict it"))
            continue
        ok = ev["value"] <= bud
        lines.append(_line(key, bud, ev["value"], ev["source"], ok,
                           _latency_advice(key, bud, ev["value"], evidence.get("latency_breakdown"), macs_ratio),
                           where=ev["where"]))

    if b.peak_memory_mb is not None:
        ev = _best(evidence.get("peak_memory_mb"))
        if ev is None:
            lines.append(_line("peak_memory_mb", b.peak_memory_mb, None, None, None,
                               "no evidence: measure model_footprint_mb or predict peak_memory_mb"))
        else:
            ok = ev["value"] <= b.peak_memory_mb
            if ok:
                adv = f"meets it with {_pct((b.peak_memory_mb - ev['value']) / b.peak_memory_mb)} headroom"
            elif "int8" not in art:
                adv = (f"needs {ev['value'] - b.peak_memory_mb:.1f} MB less: use the INT8 artifact (weights and "
                       "activations ~4x smaller) or prune more channels")
            else:
                adv = (f"needs {ev['value'] - b.peak_memory_mb:.1f} MB less: prune more channels in the widest "
                       "layers (activation memory scales with width)")
            lines.append(_line("peak_memory_mb", b.peak_memory_mb, ev["value"], ev["source"], ok, adv,
                               where=ev["where"]))

    if b.model_size_mb is not None:
        size = evidence.get("model_size_mb")
        if isinstance(size, dict):
            size = size.get("value")
        if size is None:
            lines.append(_line("model_size_mb", b.model_size_mb, None, None, None, "no evidence: give the file size"))
        else:
            size = float(size)
            ok = size <= b.model_size_mb
            if ok:
                adv = f"meets it with {_pct((b.model_size_mb - size) / b.model_size_mb)} headroom"
            elif "int8" not in art and size / 4 <= b.model_size_mb:
                adv = f"use INT8: ~4x smaller (~{size / 4:.1f} MB)"
            elif "int8" not in art:
                adv = (f"use INT8 (~{size / 4:.1f} MB) and prune ~{_pct(1 - 4 * b.model_size_mb / size)} more "
                       "parameters")
            else:
                adv = f"prune ~{_pct(1 - b.model_size_mb / size)} more parameters"
            lines.append(_line("model_size_mb", b.model_size_mb, size, "file", ok, adv))

    if b.max_accuracy_drop is not None:
        m, d = evidence.get("metric"), evidence.get("dense_metric")
        name = evidence.get("metric_name", "accuracy")
        if evidence.get("metric_mismatch"):
            lines.append(_line("max_accuracy_drop", b.max_accuracy_drop, None, None, None,
                               evidence["metric_mismatch"]))
        elif m is None or d is None:
            lines.append(_line("max_accuracy_drop", b.max_accuracy_drop, None, None, None,
                               "no evidence: give 'metric' and 'dense_metric'"))
        else:
            drop = float(d) - float(m)
            ok = drop <= b.max_accuracy_drop + 1e-9
            adv = (f"meets it ({name} {m:.2f} vs dense {d:.2f})" if ok else
                   f"{name} dropped {drop:.2f} points (> {b.max_accuracy_drop:g}): prune less (raise flops_keep"
                   f"{' above ' + format(macs_ratio, '.2f') if macs_ratio else ''}) or fine-tune longer")
            if not ok and "int8" in art:
                adv += "; check the INT8 calibration (compare with the fp32 artifact)"
            lines.append(_line("max_accuracy_drop", b.max_accuracy_drop, drop, "measured", ok, adv))

    if evidence.get("int8"):
        lines.append(_int8_line(evidence["int8"], evidence.get("metric_name", "accuracy")))

    missing = [ln["name"] for ln in lines if ln["passed"] is None]
    return {"target": t.name, "artifact": art or None, "passed": all(ln["passed"] is True for ln in lines),
            "missing": missing, "lines": lines}


def predicted_p90(prediction: dict, measured: Optional[list]) -> Optional[tuple[float, str]]:
    """(p90 ms, how) for a p50 prediction: the cost model predicts a typical (p50) latency; the tail is carried
    over from a measurement of the same artifact (device first, else host) as the ratio p90 / p50, so
    p90 >= p50 always holds. None without a measurement."""
    tails = [m for m in measured or [] if m.get("p50_ms") and m.get("p90_ms")]
    if not tails:
        return None
    ratio = max(1.0, tails[0]["p90_ms"] / tails[0]["p50_ms"])
    return (prediction["latency_ms"] * ratio,
            f"predicted p50 x measured p90/p50 ratio {ratio:.2f} ({tails[0].get('where', 'host')})")


def _int8_line(q: dict, metric_name: str) -> dict:
    """INT8 artifact vs the fp32 torch model: a drop over ``export.int8_tolerance`` fails the budget."""
    drop, tol = q.get("metric_drop"), q.get("tolerance")
    if drop is None or tol is None:
        return _line("int8_accuracy_drop", tol, drop, None, None, "no evidence: the export recorded no INT8 drop")
    ok = drop <= tol + 1e-9
    adv = (f"meets it ({metric_name} {drop:.2f} points below the fp32 model)" if ok else
           f"the INT8 artifact loses {drop:.2f} {metric_name} points vs the fp32 model (> export.int8_tolerance "
           f"{tol:g}): raise export.calib_samples (now {q.get('calib_samples')}), use per-channel quantization, "
           "or keep the fp32 artifact (--formats without the -int8 one)")
    return _line("int8_accuracy_drop", float(tol), float(drop), "measured", ok, adv,
                 where="test split, INT8 artifact vs torch fp32")


def evidence_from(*, measured: Optional[list] = None, prediction: Optional[dict] = None,
                  size_mb: Optional[float] = None, metric: Optional[float] = None,
                  dense_metric: Optional[float] = None, metric_name: str = "accuracy", macs: Optional[float] = None,
                  dense_macs: Optional[float] = None, artifact: Optional[str] = None) -> dict:
    """Build check_budget's evidence from measure_host/measure_remote results and a costmodel.predict result."""
    ev: dict[str, Any] = {"artifact": artifact, "metric": metric, "dense_metric": dense_metric,
                          "metric_name": metric_name, "model_size_mb": size_mb,
                          "macs": macs if macs is not None else (prediction or {}).get("macs"), "dense_macs": dense_macs}
    p50, p90, mem = [], [], []
    for m in measured or []:
        lab = {"source": m.get("source", "measured"), "where": m.get("where", "host")}
        p50.append({"value": m["p50_ms"], **lab})
        p90.append({"value": m["p90_ms"], **lab})
        mem.append({"value": m["model_footprint_mb"], **lab})
        if size_mb is None and m.get("model_size_mb") is not None:
            ev["model_size_mb"] = m["model_size_mb"]
    if prediction:
        p50.append({"value": prediction["latency_ms"], "source": "predicted"})
        tail = predicted_p90(prediction, measured)
        if tail:
            p90.append({"value": tail[0], "source": "predicted", "how": tail[1]})
        # the one predicted model-memory figure (costmodel: the quantity the runner measures as model_footprint_mb)
        mem.append({"value": prediction["peak_memory_mb"], "source": "predicted",
                    "how": prediction.get("peak_memory_how")})
        ev["latency_breakdown"] = {"fixed_ms": prediction.get("overhead_ms"),
                                   "scalable_ms": prediction.get("roofline_ms")}
    ev["latency_p50_ms"], ev["latency_p90_ms"], ev["peak_memory_mb"] = p50 or None, p90 or None, mem or None
    return ev
