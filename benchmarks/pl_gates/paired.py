"""Paired differences with a 95% confidence interval from a harness run (``edgeprune compare``'s results.json).

For every level and every method B other than the reference A, over the seeds both finished:
mean of (A − B) per seed, and the Student-t 95% interval of that mean. Pairing by seed removes the
dense model's seed-to-seed variation (every method of a seed starts from the same dense model).

    python benchmarks/pl_gates/paired.py benchmarks/results/fashion-mnist-resnet-pl-gates-ablation/results.json \\
        --reference 'pl-gates[gamma=0]'

Several results.json files are merged (a study run in several folders): their rows pair only if every seed's
dense model is the same in each (same dense accuracy to the last digit), which is checked; a (method, level,
seed) row present in more than one file is taken from the first.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict

from scipy import stats


def paired(rows: list[dict], reference: str, field: str = "metric") -> list[dict]:
    by = defaultdict(dict)  # (level, method) -> seed -> value
    for r in rows:
        if r.get("error") or r.get(field) is None:
            continue
        by[(r["level"], r["method"])][r["seed"]] = float(r[field])
    out = []
    for (level, method), vals in sorted(by.items()):
        ref = by.get((level, reference))
        if method == reference or not ref:
            continue
        seeds = sorted(set(vals) & set(ref))
        d = [ref[s] - vals[s] for s in seeds]
        n = len(d)
        mean = sum(d) / n if n else math.nan
        if n >= 2:
            sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
            half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
        else:
            half = math.nan
        out.append({"level": level, "reference": reference, "method": method, "n": n, "seeds": seeds,
                    "mean_diff": mean, "ci95": [mean - half, mean + half] if n >= 2 else None,
                    "excludes_zero": bool(n >= 2 and (mean - half > 0 or mean + half < 0))})
    return out


def merge(blobs: list[tuple[str, list[dict]]]) -> list[dict]:
    """The rows of several runs as one list; raises ``SystemExit`` when a seed's dense models differ."""
    dense: dict[int, tuple[float, str]] = {}
    rows, seen = [], set()
    for name, rs in blobs:
        for r in rs:
            if r.get("method") == "dense" and r.get("metric") is not None:
                if r["seed"] in dense and dense[r["seed"]][0] != r["metric"]:
                    raise SystemExit(f"paired.py: seed {r['seed']}'s dense model differs between {dense[r['seed']][1]} "
                                     f"({dense[r['seed']][0]}) and {name} ({r['metric']}): their rows do not pair; "
                                     "compare files of one study only")
                dense.setdefault(r["seed"], (r["metric"], name))
            key = (r.get("method"), r.get("level"), r.get("seed"))
            if key not in seen:
                seen.add(key)
                rows.append(r)
    return rows


def table(res: list[dict], field: str) -> str:
    lines = [f"| level | {field}: A − B, A = reference | B | seeds | mean | 95% CI | excludes 0 |",
             "|---|---|---|---|---:|---|---|"]
    for r in res:
        ci = f"[{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}]" if r["ci95"] else "– (one seed)"
        lines.append(f"| {r['level']:g} | {r['reference']} | {r['method']} | {r['n']} | {r['mean_diff']:+.2f} | "
                     f"{ci} | {'yes' if r['excludes_zero'] else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+", help="results.json of an `edgeprune compare` run (several: merged, "
                    "checked to share their dense models)")
    ap.add_argument("--reference", default="pl-gates")
    ap.add_argument("--field", default="metric", help="row field (metric, latency_ms, ...)")
    a = ap.parse_args()
    blobs = []
    for name in a.results:
        with open(name) as f:
            blobs.append((name, json.load(f)["rows"]))
    rows = merge(blobs)
    print(table(paired(rows, a.reference, a.field), a.field))


if __name__ == "__main__":
    main()
