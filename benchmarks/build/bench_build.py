"""Wall time of the quickstart's main job: `edgeprune build --target rpi4` on the embedded default.

    python benchmarks/build/bench_build.py [--repeats 3] [--out benchmarks/build]

Runs the real CLI in a fresh subprocess into a fresh temporary output folder each time,
and records the total wall time and each stage's time from the run folder's stages.json.
Goal (issue: backbone): under 60 s on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    a = ap.parse_args()
    runs = []
    for i in range(a.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "edgeprune.cli", "-q", "build", "--target", "rpi4", "--output", tmp],
                               capture_output=True, text=True, stdin=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                sys.exit(f"build failed (exit {p.returncode}): {p.stderr[-2000:]}")
            stages = json.loads(next(Path(tmp).glob("rpi4-cnn-*/stages.json")).read_text())
            runs.append({"wall_s": wall, "stages_s": {k: v["seconds"] for k, v in stages.items()}})
            print(f"run {i + 1}: {wall:.1f} s")
    med = statistics.median(r["wall_s"] for r in runs)
    stage_names = list(runs[0]["stages_s"])
    meta = {"load_average_1m": round(__import__("os").getloadavg()[0], 2),
            "date": date.today().isoformat(), "machine": f"{cpu_name()}, {os.cpu_count()} cores",
            "command": f"python benchmarks/build/bench_build.py --repeats {a.repeats}"}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps({"meta": meta, "runs": runs, "median_wall_s": med}, indent=2))
    lines = ["# `edgeprune build --target rpi4` on the embedded default: wall time", "",
             f"- Command: `{meta['command']}` (each run: a fresh process, a fresh output folder, no resume)",
             f"- Date: {meta['date']}; machine: {meta['machine']} (shared VM; 1-min load average at the end: {meta['load_average_1m']})",
             f"- Median wall time: **{med:.1f} s** over {a.repeats} runs (goal: under 60 s)", "",
             "| run | wall s | " + " | ".join(stage_names) + " |", "|---|---:|" + "---:|" * len(stage_names)]
    for i, r in enumerate(runs):
        lines.append(f"| {i + 1} | {r['wall_s']:.1f} | " + " | ".join(f"{r['stages_s'][s]:.1f}" for s in stage_names) + " |")
    (a.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
