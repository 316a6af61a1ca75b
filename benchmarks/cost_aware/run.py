"""pl-gates cost=macs vs cost=latency: predicted target latency of the compacted model at the same MACs budget.

Paired seeds (same dense model, same data, same gate seed); the only difference is the budget term's per-layer
weights (the target's cost model, :func:`edgeprune.bench.planning.layer_latency_weights`). Latency is PREDICTED
by the cost model for the target (no device here); accuracy is measured on the validation split.

    python benchmarks/cost_aware/run.py --model resnet --target rpi4 --seeds 0 1 2 --out benchmarks/cost_aware/results.json
"""

import argparse
import json
import os
import platform
import subprocess
import time

import numpy as np
import torch

from edgeprune.bench.planning import predict_dense, preferred_artifact
from edgeprune.data import load_dataset
from edgeprune.methods import FitContext
from edgeprune.methods.pl_gates import PLGates
from edgeprune.models import build_model
from edgeprune.surgery import analyze, compact
from edgeprune.targets import load_target
from edgeprune.train import evaluate, seed_everything, train


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--target", default="rpi4")
    ap.add_argument("--flops-keep", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    ds = load_dataset(a.dataset)
    xtr, ytr = ds.normalize(ds.x_train), ds.y_train
    xv, yv = ds.normalize(ds.x_val), ds.y_val
    target = load_target(a.target)
    art = preferred_artifact(target)
    ex = torch.zeros(1, *ds.input_shape)
    rows = []
    for seed in a.seeds:
        seed_everything(seed)
        dense = build_model(a.model, ds.input_shape, ds.num_classes)
        train(dense, xtr, ytr, epochs=a.epochs, lr=0.05, seed=seed)
        graph = analyze(dense, ex)
        dense_ms = predict_dense(dense, ex, target, art)[0]["latency_ms"]
        for cost in ("macs", "latency"):
            ctx = FitContext(xtr, ytr, xv, yv, ex, graph, "classification", a.flops_keep, target.width_multiple or 1,
                             seed, {"epochs": a.epochs, "lr": 0.05, "batch_size": 64, "weight_decay": 5e-4},
                             log=lambda s: None)
            t0 = time.perf_counter()
            r = PLGates(cost=cost, latency_target=a.target, epochs=a.epochs).fit(dense, ctx)
            small = compact(r.model, r.plan, ex, graph).eval()
            pred = predict_dense(small, ex, target, art)[0]
            rows.append({"seed": seed, "cost": cost, "macs_kept": r.history["plan_macs_kept"],
                         "pred_ms": pred["latency_ms"], "dense_pred_ms": dense_ms,
                         "val": evaluate(small, xv, yv, "classification"), "fit_s": time.perf_counter() - t0})
            print(rows[-1], flush=True)
    d = {c: np.array([r["pred_ms"] for r in rows if r["cost"] == c]) for c in ("macs", "latency")}
    diff = d["latency"] - d["macs"]
    ci = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    summary = {"pred_ms_diff_latency_minus_macs_mean": float(diff.mean()), "ci95": float(ci),
               "val_diff_mean": float(np.mean([b["val"] - a_["val"] for a_, b in zip(rows[::2], rows[1::2])]))}
    print(summary)
    if a.out:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        meta = {"args": vars(a), "artifact": art, "git": rev, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": platform.processor() or platform.machine(), "loadavg": os.getloadavg(),
                "note": "latency predicted by the cost model (no device); shared 2-core machine for training only"}
        with open(a.out, "w") as f:
            json.dump({"meta": meta, "rows": rows, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
