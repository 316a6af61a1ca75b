"""Time analyze + compact + verify of torchvision's ResNet-50 (random init, eval mode, input 1x3x224x224).

    python benchmarks/surgery/resnet50_time.py [--repeats 7] [--out results.json] [--label NAME]

One process, one thread (OMP_NUM_THREADS=1 and torch.set_num_threads(1)). Each repeat runs, on the
same model object:

1. ``analyze(model, x)`` -- the dependency trace, the groups, the cost table and the probe compaction
   (one channel less per group, run once);
2. a plan keeping a random 70% of every group (seeded);
3. ``compact_and_verify(model, plan, x, x, graph)`` -- the compaction, the masked reference built
   from the original, both run on the input and compared (<= 1e-5 relative), and the compact
   model's parameter count checked against the plan's prediction.

A first, untimed repeat warms up. Reported: per repeat the process CPU seconds (``time.process_time``:
what the steps cost on a core of their own) and the wall seconds, their medians, and the load
average before and after (the machine is a 2-core machine shared with other jobs: wall times
under load are not benchmarks, and CPU seconds rise too when the cores' other hyperthreads are busy).
The result JSON is appended to ``--out`` under ``--label`` (the git revision by default).
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
sys.path.insert(0, str(HERE.parent / "zoo"))


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    except OSError:
        return ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--keep", type=float, default=0.7)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import numpy as np
    import torch
    from reference import import_torchvision

    from edgeprune.surgery import analyze, compact_and_verify, plan_from_scores

    torch.set_num_threads(1)
    tv = import_torchvision()
    torch.manual_seed(0)
    model = tv.models.get_model("resnet50", weights=None).eval()
    x = torch.randn(1, 3, a.size, a.size)

    def once():
        c0, t0 = time.process_time(), time.perf_counter()
        graph = analyze(model, x)
        c1, t1 = time.process_time(), time.perf_counter()
        rng = np.random.default_rng(0)
        plan = plan_from_scores(graph, {g: rng.random(v.size) for g, v in graph.groups.items()},
                                {g: max(1, round(v.size * a.keep)) for g, v in graph.groups.items()})
        c2, t2 = time.process_time(), time.perf_counter()
        small, report = compact_and_verify(model, plan, x, x, graph)
        c3, t3 = time.process_time(), time.perf_counter()
        return {"analyze_cpu_s": c1 - c0, "compact_verify_cpu_s": c3 - c2, "total_cpu_s": c3 - c0,
                "analyze_wall_s": t1 - t0, "compact_verify_wall_s": t3 - t2, "total_wall_s": t3 - t0,
                "rel_diff": report["rel_diff"], "params": report["params"], "groups": len(graph.groups)}

    once()  # warm-up
    load_before = os.getloadavg()
    rows = [once() for _ in range(a.repeats)]
    load_after = os.getloadavg()
    keys = [k for k in rows[0] if k.endswith("_s")]
    result = {
        "label": a.label or git_rev(), "git": git_rev(),
        "model": "torchvision resnet50, random init, eval", "input": [1, 3, a.size, a.size], "keep": a.keep,
        "repeats": a.repeats, "median": {k: statistics.median(r[k] for r in rows) for k in keys},
        "runs": rows, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "loadavg_before": load_before, "loadavg_after": load_after,
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, shared with other jobs".replace("  ", " "),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "OMP_NUM_THREADS=1 python " + " ".join([f"benchmarks/surgery/{Path(__file__).name}", *sys.argv[1:]]),
    }
    print(json.dumps({"label": result["label"], "median": result["median"], "loadavg": load_before}))
    if a.out:
        old = json.loads(a.out.read_text()) if a.out.exists() else []
        a.out.write_text(json.dumps(old + [result], indent=1) + "\n")


if __name__ == "__main__":
    main()
