"""Time analyze + compact + verify of torchvision's ResNet-50 (64x64 input, keep 70% of every group).

    python benchmarks/zoo/time_resnet50.py [--repeats 5] [--size 64]

Prints one JSON line: per-step wall-clock medians over the repeats, the process CPU seconds (one thread:
the time the steps take when they get a core of their own), the load average, the machine (shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--model", default="resnet50")
    a = ap.parse_args()
    import numpy as np
    import torch
    from reference import import_torchvision

    from edgeprune.surgery import analyze, compact_and_verify, plan_from_scores

    tv = import_torchvision()
    torch.manual_seed(0)
    model = tv.models.get_model(a.model, weights=None).eval()
    x = torch.randn(2, 3, a.size, a.size)
    ex = x[:1]
    rows = []
    for _ in range(a.repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        graph = analyze(model, ex)
        t1 = time.perf_counter()
        rng = np.random.default_rng(0)
        plan = plan_from_scores(graph, {g: rng.random(v.size) for g, v in graph.groups.items()},
                                {g: max(1, round(v.size * 0.7)) for g, v in graph.groups.items()})
        t2 = time.perf_counter()
        compact_and_verify(model, plan, ex, x, graph)
        t3 = time.perf_counter()
        # CPU seconds of this process: what the steps cost without waiting for the shared cores
        rows.append({"analyze_s": t1 - t0, "compact_verify_s": t3 - t2, "total_s": t3 - t0,
                     "total_cpu_s": time.process_time() - c0})
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(json.dumps({
        "model": a.model, "input": a.size, "repeats": a.repeats, "median": med, "all": rows,
        "threads": torch.get_num_threads(), "loadavg": os.getloadavg(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, shared with other jobs",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip(),
    }))


if __name__ == "__main__":
    main()
