"""Wall time of soft-coef's grid search in this process vs over a process pool (``workers``), same result.

An untrained model (the timing does not depend on the weights; the check that both runs pick the same
point and metric values does), Fashion-MNIST validation slice, ``optimizer=grid``. Runs are interleaved
(serial, pooled, serial, pooled, ...) so that a change in the machine's load hits both; the pooled time
includes starting the workers (spawn, importing torch) and sending them the state.

    nice -n 5 python benchmarks/fanout/grid_workers.py [--model cnn] [--repeats 2] [--val-samples 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

import numpy as np
import torch

from edgeprune.data import load_dataset
from edgeprune.methods import FitContext, get_method
from edgeprune.models import build_model
from edgeprune.surgery import analyze


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--flops-keep", type=float, default=0.5)
    ap.add_argument("--grid-step", type=float, default=0.1)
    ap.add_argument("--val-samples", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    ds = load_dataset(a.dataset)
    torch.manual_seed(0)
    model = build_model(a.model, ds.input_shape, ds.num_classes).eval()
    example = torch.zeros(1, *ds.input_shape)
    ctx = FitContext(ds.x_train, ds.y_train, ds.x_val, ds.y_val, example, analyze(model, example), "classification",
                     a.flops_keep, 1, 0, {}, log=lambda s: None)
    times: dict[int, list[float]] = {1: [], a.workers: []}
    hist = {}
    load = []
    for _ in range(a.repeats):
        for w in (1, a.workers):
            load.append(os.getloadavg()[0])
            t0 = time.perf_counter()
            res = get_method("soft-coef", {"optimizer": "grid", "grid_step": a.grid_step, "max_evals": 10_000,
                                           "val_samples": a.val_samples, "workers": w}).fit(model, ctx)
            times[w].append(time.perf_counter() - t0)
            hist[w] = res.history
    same = all(hist[1][k] == hist[a.workers][k] for k in ("coefficients", "val_metric", "evaluations")) and \
        [t[:3] for t in hist[1]["trace"]] == [t[:3] for t in hist[a.workers]["trace"]]
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, git {git}, {platform.machine()} "
          f"{os.cpu_count()} cores (shared with other jobs; 1-min load average {min(load):.1f}-{max(load):.1f})")
    print(f"{a.dataset} {a.model}, {hist[1]['evaluations']} grid points, {hist[1]['val_samples']} validation samples")
    print("| workers | wall s per grid (each run) | mean |")
    print("|---|---|---|")
    for w, ts in times.items():
        print(f"| {w} | {', '.join(f'{t:.1f}' for t in ts)} | {np.mean(ts):.1f} |")
    print(f"same best point, metric values and evaluation count: {same}")


if __name__ == "__main__":
    main()
