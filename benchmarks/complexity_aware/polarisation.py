"""Do the π of complexity-aware polarise to {0, 1}? Variants of the π dynamics, histograms at the end.

Each variant trains the built-in ``resnet`` from scratch on a dataset with the complexity-aware
method (budget mode unless the variant fixes λ) and records, before the end-of-training rounding:
the histogram of the unit and branch π, how many live π are undecided (in (0.02, 0.98)) after
each epoch, the mean distance of the live π to {0, 1}, how many structures the removal rule took
out during training, how many channels the rounding moved across ½ (kept with π < ½, removed with
π ≥ ½), and the test accuracy of the compacted model (batch-norm re-estimated, no fine-tuning).

    python benchmarks/complexity_aware/polarisation.py --dataset digits --epochs 8 --seeds 0,1 \
        --out benchmarks/complexity_aware/polarisation-digits
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from edgeprune.data import load_dataset
from edgeprune.methods import FitContext, get_method
from edgeprune.models import build_model
from edgeprune.surgery import analyze, compact_and_verify
from edgeprune.train import evaluate, seed_everything

sys.path.insert(0, str(Path(__file__).parent))
from bench_live_compaction import BIN_NAMES, pi_histogram  # noqa: E402

VARIANTS = {
    "default (budget mode)": {},
    "pi_lr x5": {"pi_lr": 0.5},
    "epochs x3": {"epochs_factor": 3},
    "fixed lam=1 (paper mode)": {"lam": 1.0},
    "fixed lam=4 (paper mode)": {"lam": 4.0},
    "polarize=0.05": {"polarize": 0.05},
    "polarize=0.2": {"polarize": 0.2},
    "units only": {"branches": False},
    "units only + pi_lr x5": {"branches": False, "pi_lr": 0.5},
    "units only + polarize=0.2": {"branches": False, "polarize": 0.2},
}


def run(ds, args, seed, opts) -> dict:
    opts = dict(opts)
    epochs = args.epochs * opts.pop("epochs_factor", 1)
    seed_everything(seed)
    model = build_model("resnet", ds.input_shape, 10)
    ex = torch.zeros(1, *ds.input_shape)
    graph = analyze(model, ex)
    n = args.train_limit or len(ds.x_train)
    ctx = FitContext(ds.normalize(ds.x_train[:n]), ds.y_train[:n], ds.normalize(ds.x_val[:2000]), ds.y_val[:2000], ex,
                     graph, "classification", args.flops_keep, 1, seed,
                     {"epochs": epochs, "lr": args.lr, "batch_size": 64, "weight_decay": 5e-4}, log=lambda s: None)
    res = get_method("complexity-aware", {"epochs": epochs, "eval_samples": 0, **opts}).fit(model, ctx)
    h = res.history
    small, rep = compact_and_verify(res.model, res.plan, ex, torch.from_numpy(ds.normalize(ds.x_test[:128])), graph)
    pis = [v for vs in h["pi_before_rounding"].values() for v in vs]
    finals = [v for vs in h["pi_final"].values() for v in vs]
    return {
        "seed": seed, "epochs": epochs, "options": opts,
        "unit_pi_histogram": pi_histogram(pis), "branch_pi_histogram": pi_histogram(list(h["branch_pi_before_rounding"].values())),
        "epoch_pi_undecided": [e["pi_undecided"] for e in h["epochs"]],
        "epoch_pi_distance_to_binary": [e["pi_distance_to_binary"] for e in h["epochs"]],
        "units_removed_in_training": h["units_removed_in_training"],
        "branches_removed_in_training": h["branches_removed_in_training"],
        "rounded_up": sum(1 for p, f in zip(pis, finals) if p < 0.5 and f == 1.0),
        "rounded_down": sum(1 for p, f in zip(pis, finals) if p >= 0.5 and f == 0.0),
        "last_epoch_forward_macs_kept": h["epoch_forward_macs_kept"][-1],
        "plan_macs_kept": rep["macs"] / rep["dense"]["macs"],
        "test_acc_no_finetune": evaluate(small, ds.normalize(ds.x_test), ds.y_test, "classification"),
        "lambda_final": h["lambda_final"],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--train-limit", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--flops-keep", type=float, default=0.47)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--variants", default="all", help="comma list of variant names (default all)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.dataset)
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    meta = {"command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
            "start": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "loadavg_start": os.getloadavg(),
            "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()}
    rows = []
    for name in names:
        for seed in [int(s) for s in args.seeds.split(",")]:
            rows.append({"variant": name, **run(ds, args, seed, VARIANTS[name])})
            (out / "runs.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=1))
    meta.update(end=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), loadavg_end=os.getloadavg())
    (out / "runs.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=1))
    (out / "results.md").write_text(report(meta, rows))
    print(report(meta, rows))


def report(meta, rows) -> str:
    lines = [f"- Command: `{meta['command']}`", f"- Date: {meta['start']} → {meta['end']} (UTC), git {meta['git']}; "
             f"load average {meta['loadavg_start'][0]:.1f} → {meta['loadavg_end'][0]:.1f} (machine shared)", "",
             "Unit π / branch π before the end-of-training rounding, counts per bin (summed over seeds):", "",
             "| variant | " + " | ".join(BIN_NAMES) + " | undecided after each epoch (mean over seeds) | removed in training "
             "(units/branches) | rounded up / down | forward MACs kept, last epoch | plan MACs kept | test acc % (no FT) |",
             "|---|" + "---|" * (len(BIN_NAMES) + 6)]
    for name in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == name]
        uh = np.sum([r["unit_pi_histogram"] for r in rs], 0)
        bh = np.sum([r["branch_pi_histogram"] for r in rs], 0)
        und = np.mean([r["epoch_pi_undecided"] for r in rs], 0)
        acc = [r["test_acc_no_finetune"] for r in rs]
        lines.append(f"| {name} | " + " | ".join(f"{u}/{b}" for u, b in zip(uh, bh)) + " | "
                     + " ".join(f"{u:.0f}" for u in und) + " | "
                     + f"{np.mean([r['units_removed_in_training'] for r in rs]):.0f}/"
                     + f"{np.mean([r['branches_removed_in_training'] for r in rs]):.1f} | "
                     + f"{np.mean([r['rounded_up'] for r in rs]):.0f} / {np.mean([r['rounded_down'] for r in rs]):.0f} | "
                     + f"{np.mean([r['last_epoch_forward_macs_kept'] for r in rs]):.1%} | "
                     + f"{np.mean([r['plan_macs_kept'] for r in rs]):.1%} | {np.mean(acc):.2f} ± {np.std(acc):.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
