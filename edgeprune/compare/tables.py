"""Summaries of the result rows: mean ± std over seeds, the Markdown tables, computed observations."""

from __future__ import annotations

import math

import numpy as np


def time_to_target(curve: list | None, target: float | None, index: int = 0) -> float | None:
    """The first time at which a ``[[seconds, val_metric, epochs], ...]`` curve reaches ``target``:
    in seconds (``index=0``) or in epochs trained (``index=2``)."""
    if not curve or target is None:
        return None
    return next((float(p[index]) for p in curve if p[1] is not None and p[1] >= target), None)



def _ms(vals: list[float]) -> tuple[float, float]:
    vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


SUMMARY_STATS = ("metric", "metric_before_ft", "macs_kept", "params_kept", "latency_ms", "speedup", "prune_s",
                 "train_s", "tp_ops_kept", "own_epochs", "finetune_epochs")


def summarize(rows: list[dict], target_metric: float | None = None) -> list[dict]:
    """Mean and std over seeds per (method, level), in first-seen order; failed rows are counted apart.

    With ``target_metric``: ``time_to_target_s`` (mean over the seeds that reached it) and ``reached``
    ("k/n") from each row's validation curve."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], float(r["level"])), []).append(r)
    out = []
    for (method, level), rs in groups.items():
        ok = [r for r in rs if not r.get("error")]
        s = {"method": method, "level": level, "kind": rs[0].get("kind"), "n": len(ok), "failed": len(rs) - len(ok),
             "requested_keep": 1.0 - level, "widths": ok[0].get("widths") if ok else None}
        for k in SUMMARY_STATS:
            s[k], s[k + "_std"] = _ms([r.get(k) for r in ok])
        names = dict.fromkeys(k for r in ok for k in (r.get("extras") or {}))
        s["extras"] = {k: list(_ms([(r.get("extras") or {}).get(k) for r in ok])) for k in names}
        if target_metric is not None:
            times = [time_to_target(r.get("curve"), target_metric) for r in ok]
            hit = [t for t in times if t is not None]
            s["time_to_target_s"], s["time_to_target_s_std"] = _ms(hit)
            s["epochs_to_target"], s["epochs_to_target_std"] = _ms(
                [e for e in (time_to_target(r.get("curve"), target_metric, 2) for r in ok) if e is not None])
            s["reached"] = f"{len(hit)}/{len(ok)}"
        out.append(s)
    return out


def _fmt(m: float, s: float, digits: int = 2, scale: float = 1.0) -> str:
    if m is None or math.isnan(m):
        return "–"
    if s is None or math.isnan(s) or s == 0.0:
        return f"{m * scale:.{digits}f}"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def extra_names(summary: list[dict]) -> list[str]:
    """The method counters (``MethodResult.extras``, e.g. ``metric_evaluations``) any summary row has."""
    return list(dict.fromkeys(k for s in summary for k in (s.get("extras") or {})))


def markdown_table(summary: list[dict], metric_name: str, target_metric: float | None = None) -> str:
    unit = {"accuracy": "acc. %", "psnr": "PSNR dB"}.get(metric_name, metric_name)
    ttt = target_metric is not None
    extras = extra_names(summary)  # one column per method counter; "–" for methods without it
    head = (f"| method | FLOPs removal | {unit} | {unit} before FT | MACs kept % | params kept % | latency ms | "
            f"speed-up × | ideal × | epochs (own + FT) | prune s | train s |"
            + (f" time to {target_metric:g} s | epochs to {target_metric:g} | reached |" if ttt else "")
            + "".join(f" {k.replace('_', ' ')} |" for k in extras) + " n |")
    lines = [head, "|" + "---|" * ((16 if ttt else 13) + len(extras))]
    for s in summary:
        ideal = 1.0 / s["macs_kept"] if s["macs_kept"] and not math.isnan(s["macs_kept"]) else float("nan")
        lines.append("| " + " | ".join([
            s["method"], "dense" if s["level"] == 0 else f"{s['level']:.0%}",
            _fmt(s["metric"], s["metric_std"]), _fmt(s["metric_before_ft"], s["metric_before_ft_std"]),
            _fmt(s["macs_kept"], s["macs_kept_std"], 1, 100), _fmt(s["params_kept"], s["params_kept_std"], 1, 100),
            _fmt(s["latency_ms"], s["latency_ms_std"], 3), _fmt(s["speedup"], s["speedup_std"]),
            "–" if math.isnan(ideal) else f"{ideal:.2f}", _epochs(s),
            _fmt(s["prune_s"], s["prune_s_std"], 1), _fmt(s["train_s"], s["train_s_std"], 1),
            *([_fmt(s["time_to_target_s"], s["time_to_target_s_std"], 0),
               _fmt(s["epochs_to_target"], s["epochs_to_target_std"], 1), s["reached"]] if ttt else []),
            *(_fmt(*(s.get("extras") or {}).get(k, (float("nan"), float("nan"))), 1) for k in extras),
            str(s["n"]) + (f" ({s['failed']} failed)" if s["failed"] else ""),
        ]) + " |")
    return "\n".join(lines) + "\n"


def _epochs(s: dict) -> str:
    own, ft = s.get("own_epochs"), s.get("finetune_epochs")
    if own is None or ft is None or math.isnan(own) or math.isnan(ft):
        return "–"
    return f"{own:g} + {ft:g}"


def widths_table(summary: list[dict]) -> str:
    lines = ["| method | FLOPs removal | conv/linear output widths (first seed, in module order) |", "|---|---|---|"]
    for s in summary:
        level = "dense" if s["level"] == 0 else f"{s['level']:.0%}"
        lines.append(f"| {s['method']} | {level} | {s['widths'] or '–'} |")
    return "\n".join(lines) + "\n"


def observations(rows: list[dict], summary: list[dict]) -> list[str]:
    """Facts computed from the results (no interpretation): MACs checks, speed-up vs ideal, failures."""
    obs = []
    ok = [r for r in rows if not r.get("error")]
    bad = [r for r in ok if r.get("macs_check") not in (None, "ok")]
    obs.append(f"MACs/params cross-check (edgeprune graph on the compact model vs Torch-Pruning's counter): "
               f"{len(ok) - len(bad)}/{len(ok)} rows agree exactly" + (f"; disagreeing: {', '.join(r['method'] + '@' + str(r['level']) for r in bad[:5])}" if bad else "."))
    req = [r for r in ok if r["level"] > 0]
    if req:
        gap = max(abs(r["macs_kept"] - r["requested_keep"]) for r in req)
        over = [r for r in req if r["macs_kept"] > r["requested_keep"] + 1e-9]
        obs.append(f"MACs kept vs requested: largest gap {100 * gap:.1f} points; rows above the request: {len(over)}.")
    eff: dict[tuple, list[str]] = {}
    for s in summary:
        if s["level"] > 0 and s["n"] and not math.isnan(s["speedup"]):
            k = (s["level"], f"{s['speedup']:.2f}", f"{1 / s['macs_kept']:.2f}", f"{s['speedup'] * s['macs_kept']:.2f}")
            eff.setdefault(k, []).append(s["method"])
    if eff:
        lines = "; ".join(f"−{lv:.0%} {', '.join(ms)}: {sp}× of ideal {ideal}× ({frac})"
                          for (lv, sp, ideal, frac), ms in eff.items())
        obs.append("Realised latency speed-up vs the MACs ratio, as speed-up × MACs kept in parentheses (1.00 = "
                   "latency fell as much as MACs): " + lines + ".")
    by_error: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("error"):
            by_error.setdefault(r["error"], []).append(r)
    for err, rs in by_error.items():
        where = ", ".join(f"{r['method']} −{r['level']:.0%} seed {r['seed']}" for r in rs)
        obs.append(f"Failed ({len(rs)} row(s): {where}): {err}")
    return obs

