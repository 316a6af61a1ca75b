"""complexity-aware with and without cutting removed structures out during training (paired runs).

For each seed the same run (same data, same random stream) is trained twice, ``compact_in_training``
on and off, interleaved so that the load of the shared machine falls on both alike. Recorded per
epoch: wall seconds, forward MACs per sample actually computed (the masked network still multiplies
its removed channels by 0; the compacted one no longer has them), validation accuracy, how far the
live π are from {0, 1}; at the end: the π histogram before the end-of-training rounding, the plan,
and the test accuracy of the compacted, batch-norm re-estimated model (no fine-tuning).

    python benchmarks/complexity_aware/bench_live_compaction.py --train-limit 5000 --epochs 3 --seeds 0,1 \
        --lam 4 --out benchmarks/complexity_aware/lam4
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgeprune.data import load_dataset
from edgeprune.methods import FitContext, get_method
from edgeprune.models import build_model
from edgeprune.surgery import analyze, compact_and_verify
from edgeprune.train import evaluate, seed_everything

BINS = [0.0, 0.02, 0.1, 0.5, 0.9, 0.98, 1.0000001]
BIN_NAMES = ["[0,.02)", "[.02,.1)", "[.1,.5)", "[.5,.9)", "[.9,.98)", "[.98,1]"]


def pi_histogram(values) -> list[int]:
    return np.histogram(np.asarray(values, dtype=np.float64), bins=BINS)[0].tolist()


def one_run(ds, args, seed: int, cut: bool) -> dict:
    seed_everything(seed)
    model = build_model(args.model, ds.input_shape, 10, **json.loads(args.model_options))
    ex = torch.zeros(1, *ds.input_shape)
    graph = analyze(model, ex)
    xtr, ytr = ds.normalize(ds.x_train[: args.train_limit]), ds.y_train[: args.train_limit]
    xva, yva = ds.normalize(ds.x_val[:2000]), ds.y_val[:2000]
    ctx = FitContext(xtr, ytr, xva, yva, ex, graph, "classification", args.flops_keep, 1, seed,
                     {"epochs": args.epochs, "lr": args.lr, "batch_size": 64, "weight_decay": 5e-4}, log=print)
    opts = {"epochs": args.epochs, "compact_in_training": cut, "eval_samples": 2000, **json.loads(args.options)}
    if args.lam is not None:
        opts["lam"] = args.lam
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    res = get_method("complexity-aware", opts).fit(model, ctx)
    fit_s = time.perf_counter() - t0
    h = res.history
    small, rep = compact_and_verify(res.model, res.plan, ex, torch.from_numpy(ds.normalize(ds.x_test[:256])), graph)
    acc = evaluate(small, ds.normalize(ds.x_test), ds.y_test, "classification")
    pis = [v for vs in h["pi_before_rounding"].values() for v in vs]
    bpis = list(h["branch_pi_before_rounding"].values())
    finals = [v for vs in h["pi_final"].values() for v in vs]
    flips_up = sum(1 for p, f in zip(pis, finals) if p < 0.5 and f == 1.0)
    flips_down = sum(1 for p, f in zip(pis, finals) if p >= 0.5 and f == 0.0)
    return {
        "seed": seed, "compact_in_training": cut, "options": h["options"], "fit_seconds": fit_s,
        "loadavg_before": load0, "loadavg_after": os.getloadavg(),
        "epoch_seconds": h["epoch_seconds"], "train_seconds": h["train_seconds_total"],
        "epoch_forward_macs_kept": h["epoch_forward_macs_kept"],
        "epoch_forward_gmacs": [k * rep["dense"]["macs"] * len(xtr) / 1e9 for k in h["epoch_forward_macs_kept"]],
        "epoch_val_acc": [e.get("val_metric") for e in h["epochs"]],
        "epoch_pi_undecided": [e["pi_undecided"] for e in h["epochs"]],
        "epoch_pi_distance_to_binary": [e["pi_distance_to_binary"] for e in h["epochs"]],
        "compactions": h.get("compactions", []),
        "units_removed_in_training": h["units_removed_in_training"],
        "branches_removed_in_training": h["branches_removed_in_training"],
        "unit_pi_histogram": pi_histogram(pis), "branch_pi_histogram": pi_histogram(bpis) if bpis else [],
        "units_total": len(pis), "rounded_up": flips_up, "rounded_down": flips_down,
        "plan_macs_kept": rep["macs"] / rep["dense"]["macs"], "plan_params_kept": rep["params"] / rep["dense"]["params"],
        "dropped_branches": res.plan.dropped, "test_acc_no_finetune": acc, "verify_rel_diff": rep["rel_diff"],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--model", default="resnet")
    ap.add_argument("--model-options", default="{}")
    ap.add_argument("--train-limit", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--flops-keep", type=float, default=0.47)
    ap.add_argument("--lam", type=float, default=None, help="fixed λ (default: the budget mode)")
    ap.add_argument("--options", default="{}", help="more method options as JSON")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.dataset)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {"command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
            "start": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "git": rev,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), shared with other jobs",
            "torch": torch.__version__, "threads": 1}
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        order = (True, False) if seed % 2 else (False, True)  # alternate which goes first
        for cut in order:
            runs.append(one_run(ds, args, seed, cut))
            (out / "runs.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    meta["end"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    (out / "runs.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    (out / "results.md").write_text(report(meta, runs))
    print(report(meta, runs))


def report(meta: dict, runs: list[dict]) -> str:
    lines = [f"- Command: `{meta['command']}`", f"- Date: {meta['start']} → {meta.get('end', '?')} (UTC), git {meta['git']}",
             f"- Machine: {meta['machine']}; torch {meta['torch']}, 1 thread; load average (1/5/15 min) per run below",
             "", "| seed | cut in training | epoch s | forward MACs kept per epoch | forward GMACs per epoch | val acc % per epoch "
             "| train s | cuts (s each) | plan MACs kept | test acc % (no FT) | load before → after |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        cuts = ", ".join(f"{c['seconds']:.2f}" for c in r["compactions"] if "seconds" in c) or "–"
        lines.append(f"| {r['seed']} | {'yes' if r['compact_in_training'] else 'no'} | "
                     f"{' / '.join(f'{s:.1f}' for s in r['epoch_seconds'])} | "
                     f"{' / '.join(f'{m:.1%}' for m in r['epoch_forward_macs_kept'])} | "
                     f"{' / '.join(f'{m:.1f}' for m in r['epoch_forward_gmacs'])} | "
                     f"{' / '.join(f'{a:.1f}' for a in r['epoch_val_acc'] if a is not None)} | {r['train_seconds']:.1f} | "
                     f"{len([c for c in r['compactions'] if 'seconds' in c])} ({cuts}) | {r['plan_macs_kept']:.1%} | "
                     f"{r['test_acc_no_finetune']:.2f} | {r['loadavg_before'][0]:.1f} → {r['loadavg_after'][0]:.1f} |")
    lines += ["", "π before the end-of-training rounding (units; branches after the slash), counts per bin:", "",
              "| seed | cut | " + " | ".join(BIN_NAMES) + " | undecided per epoch | mean distance to {0,1} per epoch "
              "| rounded up (π<½ kept) | rounded down (π≥½ removed) |", "|---|---|" + "---|" * (len(BIN_NAMES) + 4)]
    for r in runs:
        bh = r["branch_pi_histogram"] or [""] * len(BIN_NAMES)
        lines.append(f"| {r['seed']} | {'yes' if r['compact_in_training'] else 'no'} | "
                     + " | ".join(f"{u}/{b}" for u, b in zip(r["unit_pi_histogram"], bh)) + " | "
                     + " / ".join(str(u) for u in r["epoch_pi_undecided"]) + " | "
                     + " / ".join(f"{d:.3f}" for d in r["epoch_pi_distance_to_binary"])
                     + f" | {r['rounded_up']} | {r['rounded_down']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
