"""Per-epoch wall time of pl-gates' gate training against plain training, measured interleaved.

The accuracy side of pl-gates' evidence comes from the method harness (``edgeprune compare``,
results in ``benchmarks/results/fashion-mnist-resnet/``); this script answers the cost question
of the issue: how much slower is one epoch of joint gate + weight training (with the κ̂ estimate)
than one epoch of plain training of the same model on the same batches? Goal: at most 1.5x.

Load on a shared machine drifts over minutes, so the variants alternate within each round (one
epoch of ``--samples`` samples each, after a warm-up round of every code path that is discarded);
the ratio of mean epoch times is the overhead. Variants: the default pl-gates, pl-gates with
``gamma = 0`` (κ̂ estimated and logged but not in the loss) and gates alone (no κ̂ at all).

Writes ``overhead.json`` and ``overhead.md`` next to this file. Run from the repository root:

    python benchmarks/pl_gates/overhead.py
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgeprune.compare import machine_info, versions
from edgeprune.data import load_dataset
from edgeprune.methods import FitContext, get_method
from edgeprune.models import build_model
from edgeprune.surgery import analyze
from edgeprune.train import seed_everything, train

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "pl-gates (defaults)": {},
    "pl-gates gamma=0 (κ̂ logged only)": {"gamma": 0.0},
    "gates only (no κ̂)": {"gamma": 0.0, "kappa_every": 0},
}


def measure(x: np.ndarray, y: np.ndarray, shape: tuple, *, rounds: int, lr: float, batch_size: int) -> dict:
    example = torch.zeros(1, *shape)
    seed_everything(0)
    base = build_model("resnet", shape, 10)
    graph = analyze(base, example)
    ctx = FitContext(x, y, x[:0], y[:0], example, graph, "classification", 0.5, 1, 0,
                     {"epochs": 1, "lr": lr, "batch_size": batch_size, "weight_decay": 5e-4}, log=lambda s: None)
    times: dict[str, list[float]] = {"plain training": [], **{k: [] for k in VARIANTS}}
    kappa_s: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for r in range(rounds + 1):  # round 0 warms every code path up and is discarded
        hist = train(copy.deepcopy(base), x, y, epochs=1, batch_size=batch_size, lr=lr, seed=r)
        if r:
            times["plain training"].append(hist.epochs[0]["seconds"])
        for name, opts in VARIANTS.items():
            res = get_method("pl-gates", dict(opts, epochs=1, eval_samples=0, calib_samples=64)).fit(
                copy.deepcopy(base), ctx)
            if r:
                times[name].append(res.history["epochs"][0]["seconds"])
                kappa_s[name].append(res.history["epochs"][0]["kappa_seconds"])
        print(f"round {r}{' (warm-up)' if not r else ''}: "
              + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items() if v and r), file=sys.stderr, flush=True)
    plain = float(np.mean(times["plain training"]))
    return {
        "epoch_seconds": times,
        "kappa_seconds": kappa_s,
        "ratio": {k: float(np.mean(v)) / plain for k, v in times.items()},
        "kappa_share": {k: float(np.sum(kappa_s[k]) / np.sum(times[k])) for k in VARIANTS},
    }


def markdown(doc: dict) -> str:
    a, r = doc["args"], doc["result"]
    m = doc["machine"]
    lines = [
        "# pl-gates: per-epoch cost of gate training (interleaved measurement)",
        "",
        f"- Command: `{doc['command']}`",
        f"- Date: {doc['date']} (UTC); wall {doc['wall_seconds']:.0f} s",
        f"- Machine: {m.get('Model name', '?')}, {m.get('CPU(s)', m.get('cpu_count'))} CPU(s), {m['platform']}; "
        f"torch threads {a['threads']}; load average at start / end {doc['load_start']} / {doc['load_end']} "
        "(a shared machine: only the ratios, measured side by side, are meaningful)",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items() if v),
        f"- Workload: built-in `resnet` (16/32/64) on {a['samples']} Fashion-MNIST training images, batch "
        f"{a['batch_size']}, one epoch per variant per round, {a['rounds']} timed rounds after one warm-up round; "
        "pl-gates with its default κ̂ settings (8 samples x 10 output directions every 20 steps) unless stated",
        "",
        "| variant | epoch seconds (mean of rounds) | ratio to plain training | share of the epoch spent in κ̂ |",
        "|---|---:|---:|---:|",
    ]
    for k, v in r["epoch_seconds"].items():
        share = r["kappa_share"].get(k)
        lines.append(f"| {k} | {np.mean(v):.2f} | {r['ratio'][k]:.2f}x | "
                     + ("-" if share is None else f"{100 * share:.0f}%") + " |")
    goal = r["ratio"]["pl-gates (defaults)"]
    lines += ["", f"Goal (issue): a gate-training epoch costs at most 1.5x a plain epoch: "
                  f"**{'met' if goal <= 1.5 else 'missed'}** ({goal:.2f}x).", ""]
    notes = HERE / "overhead_notes.md"
    if notes.is_file():
        lines += [notes.read_text().rstrip(), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=2560, help="training samples per timed epoch")
    p.add_argument("--rounds", type=int, default=3, help="timed interleaved rounds (after one warm-up round)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1, as the method harness trains)")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST directory (default: the Debian package's)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    load_start = [round(v, 2) for v in os.getloadavg()]
    ds = load_dataset("fashion-mnist", seed=0, data_dir=a.data_dir)
    x, y = ds.normalize(ds.x_train[: a.samples]), ds.y_train[: a.samples]
    result = measure(x, y, ds.input_shape, rounds=a.rounds, lr=a.lr, batch_size=a.batch_size)
    doc = {
        "command": "python benchmarks/pl_gates/overhead.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "versions": versions(),
        "args": {k: v for k, v in vars(a).items() if k != "data_dir"},
        "load_start": load_start, "load_end": [round(v, 2) for v in os.getloadavg()],
        "wall_seconds": time.perf_counter() - t0, "result": result,
    }
    (HERE / "overhead.json").write_text(json.dumps(doc, indent=1) + "\n")
    (HERE / "overhead.md").write_text(markdown(doc))
    print((HERE / "overhead.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
