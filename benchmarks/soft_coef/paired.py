"""Paired differences between the rows of an `edgeprune compare` results folder (same seed, same level).

    python benchmarks/soft_coef/paired.py benchmarks/soft_coef/compare-autoencoder \\
        --pairs gradient:uniform grid-0.05:uniform gradient:grid-0.05

Method names may be abbreviated to the part inside ``soft-coef[...]`` without ``optimizer=`` (``gradient``,
``grid-0.05`` = ``optimizer=grid,grid_step=0.05,...``); an exact label works too. Prints a Markdown table:
mean ± 95% t interval of the per-seed difference of the test metric, the per-seed differences, and the
ratio of metric evaluations (the harness's ``metric_evaluations`` column).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57}


def short(label: str) -> str:
    """``soft-coef[optimizer=grid,grid_step=0.05,max_evals=5000,floor=0]`` -> ``grid-0.05,floor=0``."""
    if not label.startswith("soft-coef["):
        return label
    opts = dict(kv.split("=", 1) for kv in label[len("soft-coef["):-1].split(",") if "=" in kv)
    name = opts.pop("optimizer", "gradient")
    if "grid_step" in opts:
        name += "-" + opts.pop("grid_step")
    opts.pop("max_evals", None)
    return ",".join([name] + [f"{k}={v}" for k, v in opts.items()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--pairs", nargs="+", required=True, help="A:B pairs, difference A − B")
    a = ap.parse_args()
    rows = [r for r in json.loads((Path(a.folder) / "results.json").read_text())["rows"] if not r.get("error")]
    by = {(short(r["method"]), r["level"], r["seed"]): r for r in rows}
    unit = "dB" if rows[0]["metric_name"] == "psnr" else "points"
    print(f"| A − B | level | mean ± 95% CI ({unit}) | per seed | evaluations A / B |")
    print("|---|---|---|---|---|")
    for pair in a.pairs:
        x, y = pair.split(":")
        for level in sorted({r["level"] for r in rows if r["level"] > 0}):
            seeds = sorted(s for (m, lv, s) in by if m == x and lv == level and (y, level, s) in by)
            if not seeds:
                continue
            d = [by[(x, level, s)]["metric"] - by[(y, level, s)]["metric"] for s in seeds]
            half = T95.get(len(d) - 1, 2.0) * statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan")
            ev = [sum(by[(m, level, s)].get("extras", {}).get("metric_evaluations", 0) for s in seeds) / len(seeds)
                  for m in (x, y)]
            print(f"| {x} − {y} | {level:.0%} | {statistics.mean(d):+.3f} ± {half:.3f} | "
                  f"{', '.join(f'{v:+.3f}' for v in d)} | {ev[0]:.1f} / {ev[1]:.1f} ({ev[0] / ev[1]:.0%}) |")


if __name__ == "__main__":
    main()
