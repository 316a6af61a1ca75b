"""Does the κ̂ term / criterion change WHAT pl-gates prunes? Kept-node overlap per group against γ = 0.

One dense model (the built-in ``resnet``) is trained on a Fashion-MNIST training subset; then pl-gates runs
from it once per variant (same seed, same data order) at one MACs level, and the kept index sets of the
static plans are compared with the γ = 0, score=logit plan of the same gate kind: per group
``|A ∩ B| / max(|A|, |B|)`` (1: the same nodes kept). Also recorded per variant: the κ̂ calibration, the cost of
κ̂ (seconds and share of the gate epoch), and the static network's validation accuracy before any fine-tuning.

Resumable: the dense model and every finished variant are stored in ``--out`` and skipped on a rerun.

    python benchmarks/pl_gates/overlap.py --out benchmarks/pl_gates/overlap
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from edgeprune.data import load_dataset
from edgeprune.methods import FitContext, get_method
from edgeprune.methods.gating import kept_overlap
from edgeprune.models import build_model
from edgeprune.surgery import analyze
from edgeprune.train import seed_everything, train

VARIANTS = {  # label -> pl-gates options (the reference of each gate kind first)
    "gamma=0": {"gamma": 0.0},
    "gamma=0.1": {"gamma": 0.1},
    "gamma=1": {"gamma": 1.0},
    "gamma=0 score=kappa": {"gamma": 0.0, "score": "kappa"},
    "gamma=0 score=mixed": {"gamma": 0.0, "score": "mixed"},
    "gamma=0.5": {"gamma": 0.5},
    # control: γ = 0 with the initial logit moved by 0.01 -- how much the kept set moves under a tiny
    # perturbation of the gate trajectory that has nothing to do with κ̂
    "gamma=0 control": {"gamma": 0.0, "gate_init": 2.99},
    "network gamma=0": {"gates": "network", "gamma": 0.0},
    "network gamma=0.1": {"gates": "network", "gamma": 0.1},
}


def reference(label: str) -> str:
    return "network gamma=0" if label.startswith("network") else "gamma=0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/pl_gates/overlap")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--train-limit", type=int, default=10000)
    ap.add_argument("--dense-epochs", type=int, default=2)
    ap.add_argument("--gate-epochs", type=int, default=1)
    ap.add_argument("--keep", type=float, default=0.25, help="fraction of MACs kept (0.25: 75%% removed)")
    ap.add_argument("--kappa-every", type=int, default=50, help="pl-gates kappa_every for every variant")
    ap.add_argument("--seeds", default="0,1,2", help="comma list; one dense model per seed")
    ap.add_argument("--variants", default=";".join(VARIANTS), help="semicolon-separated labels")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {"runs": {}}

    ds = load_dataset(args.dataset, seed=0, limit=args.train_limit or None)
    xtr, ytr = ds.normalize(ds.x_train), ds.y_train
    xv, yv = ds.normalize(ds.x_val), ds.y_val
    example = torch.zeros(1, *ds.input_shape)
    results["meta"] = {
        "command": "python benchmarks/pl_gates/overlap.py " + " ".join(
            f"--{k.replace('_', '-')} '{v}'" for k, v in vars(args).items()),
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, shared with other jobs",
        "loadavg_start": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "setting": f"{args.dataset} ({len(xtr)} training images), resnet 16/32/64, "
                   f"{args.dense_epochs} dense epochs, {args.gate_epochs} gate epoch(s), keep {args.keep}, "
                   f"κ̂ every {args.kappa_every} steps",
    }
    for seed in [int(x) for x in args.seeds.split(",")]:
        runs = results["runs"].setdefault(str(seed), {})
        dense_path = out / f"dense_seed{seed}.pt"
        seed_everything(seed)
        model = build_model("resnet", ds.input_shape, ds.num_classes)
        if dense_path.exists():
            model.load_state_dict(torch.load(dense_path))
        else:
            train(model, xtr, ytr, epochs=args.dense_epochs, lr=0.01, batch_size=64, seed=seed)
            torch.save(model.state_dict(), dense_path)
        for label in args.variants.split(";"):
            if label in runs:
                continue
            graph = analyze(model.eval(), example)
            ctx = FitContext(xtr, ytr, xv, yv, example, graph, "classification", args.keep, 1, seed,
                             {"epochs": args.gate_epochs, "lr": 0.01, "batch_size": 64, "weight_decay": 5e-4},
                             log=print)
            seed_everything(seed)
            print(f"[seed {seed}: {label}]", flush=True)
            opts = dict(VARIANTS[label], epochs=args.gate_epochs, kappa_every=args.kappa_every)
            res = get_method("pl-gates", opts).fit(model, ctx)
            h = res.history
            runs[label] = {
                "options": VARIANTS[label], "keep": {g: list(map(int, v)) for g, v in res.plan.keep.items()},
                "static_val_metric": h.get("static_val_metric"), "gated_val_metric": h.get("gated_val_metric"),
                "plan_macs_kept": h["plan_macs_kept"], "gamma_scale": h.get("gamma_scale"),
                "kappa_first": h.get("kappa_first"), "kappa_last": h["kappa"][-1] if h["kappa"] else None,
                "kappa_estimates": len(h["kappa"]), "kappa_seconds_total": h["kappa_seconds_total"],
                "train_seconds_total": h["train_seconds_total"], "loadavg": os.getloadavg(),
            }
            res_path.write_text(json.dumps(results, indent=1))  # after every variant: a cut-off loses one
    write_table(results, out / "results.md")


def write_table(results: dict, path: Path) -> None:
    m = results["meta"]
    lines = [f"# Kept-node overlap vs γ = 0 ({m['setting']})", "",
             f"Command: `{m['command']}`  ", f"git {m['git']}, {m['date']}, {m['machine']} (load average at start "
             f"{m['loadavg_start'][0]:.1f}). Measured; mean over the seeds listed (one run per seed and variant). "
             "Overlap per group = |A ∩ B| / max(|A|, |B|) of the kept index sets, A the reference's plan of the same "
             "seed.", "",
             "| variant | vs | seeds | overlap: min group / mean over groups | nodes kept differently | static val % "
             "(no fine-tune) | MACs kept | κ̂₀ | c (calibration) | κ̂ s / gate-epoch s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    labels = list(dict.fromkeys(lab for runs in results["runs"].values() for lab in runs))
    for label in labels:
        ref = reference(label)
        rs = [(runs[label], runs.get(ref)) for runs in results["runs"].values() if label in runs]
        mins, means, diffs = [], [], []
        for r, rr in rs:
            if rr is not None and ref != label:
                ov = kept_overlap(rr["keep"], r["keep"])
                mins.append(min(ov.values()))
                means.append(float(np.mean(list(ov.values()))))
                diffs.append(sum(len(set(rr["keep"][g]) ^ set(r["keep"][g])) for g in ov))
        ovs = f"{np.mean(mins):.2f} / {np.mean(means):.2f}" if mins else "(reference)"
        cs = [(r["gamma_scale"] or {}).get("c") for r, _ in rs]
        cs = [c for c in cs if c]
        f = lambda k: float(np.mean([r[k] for r, _ in rs]))  # noqa: E731
        lines.append(
            f"| {label} | {ref if ref != label else '–'} | {len(rs)} | {ovs} | {np.mean(diffs) if diffs else 0:.0f} | "
            f"{f('static_val_metric'):.2f} | {f('plan_macs_kept'):.1%} | {f('kappa_first'):.3g} | "
            f"{f'{np.mean(cs):.3g}' if cs else '–'} | {f('kappa_seconds_total'):.1f} / {f('train_seconds_total'):.1f} |")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
