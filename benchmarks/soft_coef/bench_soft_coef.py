"""soft-coef optimisers side by side: metric, metric evaluations, wall time (resumable).

For each seed: train the dense model once (cached under <out>/cache/), then run every variant
of the ``soft-coef`` method on it (coefficients searched on a validation slice), cut the
model with the plan (``edgeprune.surgery.compact``, no fine-tuning: the coefficients alone are
compared, as in the paper) and measure the test metric on the whole test split. One JSON line
per (seed, variant) in <out>/results.jsonl; rerunning skips finished lines. ``--report`` only
rewrites <out>/results.md from the lines.

    python benchmarks/soft_coef/bench_soft_coef.py --model autoencoder --out benchmarks/soft_coef/autoencoder
    python benchmarks/soft_coef/bench_soft_coef.py --model resnet --train-limit 10000 --epochs 4 \\
        --out benchmarks/soft_coef/resnet
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgeprune.data import load_dataset
from edgeprune.errors import EdgepruneError
from edgeprune.methods import FitContext, get_method
from edgeprune.models import build_model
from edgeprune.surgery import analyze, compact
from edgeprune.train import evaluate, predict, train

AE_BASE = {"constraint": "params", "sparsity": 0.5, "eps": 0.02, "val_samples": 500}
AE_VARIANTS = {
    "gradient": {"optimizer": "gradient"},
    "grid-0.05": {"optimizer": "grid", "grid_step": 0.05, "max_evals": 5000},
    "grid-0.1": {"optimizer": "grid", "grid_step": 0.1},
    "uniform": {"optimizer": "uniform"},
    "random": {"optimizer": "random"},
    "l1prop": {"optimizer": "l1prop"},
    # where floors bind: 85% of parameters removed
    "gradient@85": {"optimizer": "gradient", "sparsity": 0.85},
    "gradient@85-nofloor": {"optimizer": "gradient", "sparsity": 0.85, "floor": 0.0},
    "grid-0.05@85": {"optimizer": "grid", "grid_step": 0.05, "max_evals": 5000, "sparsity": 0.85},
    "grid-0.05@85-nofloor": {"optimizer": "grid", "grid_step": 0.05, "max_evals": 5000, "sparsity": 0.85, "floor": 0.0},
    "uniform@85": {"optimizer": "uniform", "sparsity": 0.85},
}
CLS_BASE = {"constraint": "macs", "eps": 0.02, "val_samples": 200}
CLS_VARIANTS = {
    "gradient": {"optimizer": "gradient", "iters": 4},
    "grid-0.34": {"optimizer": "grid", "grid_step": 0.34, "max_evals": 500},
    "uniform": {"optimizer": "uniform"},
    "random": {"optimizer": "random"},
    "l1prop": {"optimizer": "l1prop"},
    # the same with BatchNorm statistics re-estimated on 512 training samples before every evaluation
    "gradient+bn": {"optimizer": "gradient", "iters": 4, "bn_calibration": 512},
    "uniform+bn": {"optimizer": "uniform", "bn_calibration": 512},
    "random+bn": {"optimizer": "random", "bn_calibration": 512},
    "l1prop+bn": {"optimizer": "l1prop", "bn_calibration": 512},
}
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78}


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
        return rev.strip() + (" (uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dense_model(a, ds, seed: int, task: str, x_train, cache: Path):
    torch.manual_seed(seed)
    model = build_model(a.model, ds.input_shape, 0 if task == "reconstruction" else ds.num_classes)
    path = cache / f"dense-{a.model}-seed{seed}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path))
        return model.eval(), None
    t0 = time.perf_counter()
    train(model, x_train, ds.y_train[: len(x_train)], task=task, epochs=a.epochs, lr=a.lr, seed=seed)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval(), time.perf_counter() - t0


def run(a) -> None:
    out = Path(a.out)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    (out / "cache" / ".gitignore").write_text("*\n")
    lines = out / "results.jsonl"
    done = set()
    if lines.is_file():
        for line in lines.read_text().splitlines():
            r = json.loads(line)
            done.add((r["seed"], r["variant"]))
    recon = a.model == "autoencoder"
    task = "reconstruction" if recon else "classification"
    base, variants = (AE_BASE, AE_VARIANTS) if recon else (CLS_BASE, CLS_VARIANTS)
    names = a.variants.split(",") if a.variants else list(variants)
    ds = load_dataset(a.dataset, limit=a.train_limit or None)
    prep = (lambda x: x) if recon else ds.normalize
    n_test = a.test_limit or len(ds.x_test)
    x_train, x_val, x_test = prep(ds.x_train), prep(ds.x_val), prep(ds.x_test[:n_test])
    ds.y_test = ds.y_test[:n_test]
    example = torch.zeros(1, *ds.input_shape)
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "git": git_rev(),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), shared with other jobs",
            "command": "python " + " ".join(sys.argv), "torch": torch.__version__, "train_samples": len(x_train),
            "test_samples": n_test, "val_samples_per_evaluation": base["val_samples"]}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    for seed in [int(s) for s in a.seeds.split(",")]:
        model, train_s = dense_model(a, ds, seed, task, x_train, out / "cache")
        graph = analyze(model, example)
        dense_test = evaluate(model, x_test, ds.y_test, task)
        images = {}
        for name in names:
            if (seed, name) in done and not (recon and seed == 0 and a.images):
                continue
            opts = dict(base, **variants[name])
            ctx = FitContext(x_train, ds.y_train, x_val, ds.y_val, example, graph, task,
                             1.0 - (opts.pop("sparsity_macs", 0.5)), 1, seed, {}, log=lambda s: print(s, flush=True))
            row = {"seed": seed, "variant": name, "options": opts, "dense_test": dense_test, "dense_train_s": train_s,
                   "loadavg_start": os.getloadavg()}
            t0 = time.perf_counter()
            try:
                res = get_method("soft-coef", opts).fit(model, ctx)
            except EdgepruneError as e:
                row.update(refused=str(e), seconds=time.perf_counter() - t0)
                print(f"seed {seed} {name}: refused: {e}", flush=True)
            else:
                row["seconds"] = time.perf_counter() - t0
                small = compact(res.model, res.plan, example, graph)
                cost, dense = res.plan.predicted_cost(graph), graph.dense_cost()
                h = res.history
                row.update(test=evaluate(small, x_test, ds.y_test, task), val=h["val_metric"], dense_val=h["dense_metric"],
                           evaluations=h["evaluations"], rho=h["rho"], feasible=h["feasible"],
                           params_removed=1 - cost["params"] / dense["params"],
                           macs_removed=1 - cost["macs"] / dense["macs"], widths=h["widths"],
                           coefficients=h["coefficients"], grid_points=h.get("grid_points"))
                if recon and seed == 0:
                    images[name] = (predict(small, x_test[:8]), row["test"])
                print(f"seed {seed} {name}: test {row['test']:.3f} (dense {dense_test:.3f}), "
                      f"{row['evaluations']} evaluations, {row['seconds']:.1f} s", flush=True)
            row["loadavg_end"] = os.getloadavg()
            if (seed, name) not in done:
                with lines.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                done.add((seed, name))
        if images:
            from edgeprune.report.images import reconstruction_grid

            rows = {"dense": predict(model, x_test[:8])}
            rows.update({k: v[0] for k, v in images.items()})
            scores = {"dense": dense_test, **{k: v[1] for k, v in images.items()}}
            reconstruction_grid(x_test[:8], rows, out / "reconstructions.png", scores=scores)
    report(out)


def _mci(vals):
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    if not vals:
        return "–"
    m = statistics.mean(vals)
    if len(vals) < 2:
        return f"{m:.3f}"
    half = T95.get(len(vals) - 1, 2.0) * statistics.stdev(vals) / math.sqrt(len(vals))
    return f"{m:.3f} ± {half:.3f}"


def report(out: Path) -> None:
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    meta = json.loads((out / "meta.json").read_text()) if (out / "meta.json").is_file() else {}
    order = list(dict.fromkeys(r["variant"] for r in rows))
    unit = "PSNR dB" if "autoencoder" in str(out) else "accuracy %"
    md = [f"# soft-coef optimisers: {out.name}", "",
          f"- Command: `{meta.get('command', '?')}`", f"- Date: {meta.get('date', '?')} (UTC), git {meta.get('git', '?')}",
          f"- Machine: {meta.get('machine', '?')}; torch {meta.get('torch', '?')}; wall times are on a shared 2-core "
          "host (load averages in results.jsonl)",
          "- Test metric on the test split (size under Data) after cutting the model with the plan (no fine-tuning); the "
          "coefficients were searched on a validation slice. Mean ± 95% CI (t) over seeds.",
          f"- Data: {meta.get('train_samples', '?')} training samples, metric on the first {meta.get('test_samples', '?')} "
          f"test samples, {meta.get('val_samples_per_evaluation', '?')} validation samples per metric evaluation", "",
          f"| variant | test {unit} | val {unit} | metric evaluations | wall s | params removed | MACs removed | n |",
          "|---|---|---|---|---|---|---|---|"]
    dense = {r["seed"]: r["dense_test"] for r in rows}
    md.append(f"| dense | {_mci(list(dense.values()))} | – | – | – | 0 | 0 | {len(dense)} |")
    for v in order:
        rs = [r for r in rows if r["variant"] == v]
        ok = [r for r in rs if "refused" not in r]
        if not ok:
            md.append(f"| {v} | refused: {rs[0]['refused']} | | | {_mci([r['seconds'] for r in rs])} | | | {len(rs)} |")
            continue
        md.append(f"| {v} | {_mci([r['test'] for r in ok])} | {_mci([r['val'] for r in ok])} | "
                  f"{_mci([r['evaluations'] for r in ok])} | {_mci([r['seconds'] for r in ok])} | "
                  f"{_mci([r['params_removed'] for r in ok])} | {_mci([r['macs_removed'] for r in ok])} | {len(ok)} |")
    md += ["", "## Paired differences (test metric, same seed)", ""]
    by = {(r["seed"], r["variant"]): r for r in rows if "refused" not in r}
    for a_, b_ in [("gradient", "grid-0.05"), ("gradient", "grid-0.1"), ("grid-0.05", "uniform"), ("gradient", "uniform"),
                   ("gradient", "l1prop"), ("gradient", "random"), ("gradient", "gradient-nofloor"),
                   ("grid-0.05", "grid-0.05-nofloor"), ("gradient", "grid-0.34"), ("gradient@85", "gradient@85-nofloor"),
                   ("grid-0.05@85", "grid-0.05@85-nofloor"), ("gradient@85", "uniform@85"),
                   ("gradient+bn", "uniform+bn"), ("gradient+bn", "l1prop+bn"), ("gradient+bn", "random+bn")]:
        d = [by[(s, a_)]["test"] - by[(s, b_)]["test"] for s in dense if (s, a_) in by and (s, b_) in by]
        if d:
            md.append(f"- {a_} − {b_}: {_mci(d)} ({len(d)} seeds: {', '.join(f'{x:+.3f}' for x in d)})")
    md += ["", "## Widths found (seed 0)", ""]
    for v in order:
        r = by.get((0, v))
        if r:
            md.append(f"- {v}: {r['widths']}")
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="autoencoder")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--train-limit", type=int, default=0, help="first K training samples (0: all)")
    p.add_argument("--test-limit", type=int, default=0, help="first K test samples (0: all)")
    p.add_argument("--variants", default="", help="comma list (default: all for the model)")
    p.add_argument("--images", action="store_true", help="rerun seed 0 to draw reconstructions.png")
    p.add_argument("--out", required=True)
    p.add_argument("--report", action="store_true", help="only rewrite results.md")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.report:
        report(Path(a.out))
    else:
        run(a)


if __name__ == "__main__":
    main()
