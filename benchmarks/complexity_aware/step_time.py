"""Seconds per training step of the gated network: removed channels masked vs cut out (interleaved, medians).

Whole-epoch wall times on a shared machine drift by up to 2x between identical computations; this
measures the step itself. For each removed fraction, the built-in ``resnet`` on Fashion-MNIST-shaped
inputs is wrapped in Bernoulli gates, that fraction of every group's channels is removed (the same
channels in both), and one copy is cut with :class:`~edgeprune.methods.live_compaction.LiveCompaction`.
Both then run blocks of training steps (sample ξ, forward, backward, SGD step) on one batch of 64,
alternating masked / cut block by block; the median block time per step is reported with its
forward MACs per sample.

    python benchmarks/complexity_aware/step_time.py --fractions 0,0.25,0.5,0.75 \
        --out benchmarks/complexity_aware/step-time.md
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from edgeprune.methods.complexity_aware import BernoulliNetwork
from edgeprune.methods.live_compaction import LiveCompaction
from edgeprune.models import build_model
from edgeprune.surgery import analyze


def make(model, graph, ex, frac, cut, seed):
    net = BernoulliNetwork(copy.deepcopy(model), graph, units=True, branches=False, pi_init=0.9)
    net.generator = torch.Generator().manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for grp, sl in net.masks.split(torch.arange(net.masks.n)).items():
            k = int(frac * len(sl))
            gone = sl[torch.randperm(len(sl), generator=g)[:k]]
            net.alive[gone] = False
            net.pi[gone] = 0.0
    opt = torch.optim.SGD(net.model.parameters(), lr=0.01, momentum=0.9)
    macs = graph.cost_of_sets({}, [])["macs"]
    if cut and frac > 0:
        live = LiveCompaction(net, graph, ex)
        ev = live.step(opt, torch.zeros(4, *ex.shape[1:]), 0)
        macs = ev["macs"]
    opt = torch.optim.SGD([{"params": list(net.model.parameters())}, {"params": [net.pi], "momentum": 0.0}],
                          lr=0.01, momentum=0.9)
    return net, opt, macs


def block(net, opt, x, y, steps):
    net.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fractions", default="0,0.25,0.5,0.75")
    ap.add_argument("--widths", default="16,32,64")
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    widths = tuple(int(w) for w in args.widths.split(","))
    model = build_model("resnet", (1, 28, 28), 10, widths=widths)
    ex = torch.zeros(1, 1, 28, 28)
    graph = analyze(model, ex)
    dense = graph.dense_cost()["macs"]
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    meta = {"command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "loadavg_start": os.getloadavg(),
            "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()}
    rows = []
    for frac in [float(f) for f in args.fractions.split(",")]:
        nets = {cut: make(model, graph, ex, frac, cut, 0) for cut in (False, True)}
        times = {False: [], True: []}
        for b in range(args.blocks):
            for cut in ((False, True) if b % 2 == 0 else (True, False)):
                net, opt, _ = nets[cut]
                times[cut].append(block(net, opt, x, y, args.steps))
        row = {"removed_fraction": frac}
        for cut in (False, True):
            row["cut" if cut else "masked"] = {"ms_per_step_median": 1000 * float(np.median(times[cut])),
                                               "ms_per_step_p25_p75": [1000 * float(np.quantile(times[cut], q)) for q in (0.25, 0.75)],
                                               "forward_macs_kept": nets[cut][2] / dense}
        row["paired_ratio_median"] = float(np.median(np.asarray(times[True]) / np.asarray(times[False])))
        rows.append(row)
        print(json.dumps(row))
    meta["loadavg_end"] = os.getloadavg()
    lines = [f"- Command: `{meta['command']}`", f"- Date: {meta['date']} (UTC), git {meta['git']}; resnet widths {widths}, "
             f"batch 64 of 1×28×28, 1 thread, {args.blocks} alternating blocks of {args.steps} steps per variant; shared "
             f"2-core machine, load average {meta['loadavg_start'][0]:.1f} → {meta['loadavg_end'][0]:.1f}", "",
             "| channels removed per group | forward MACs kept (masked → cut) | ms/step masked (median, p25-p75) "
             "| ms/step cut (median, p25-p75) | cut / masked (median of paired blocks) |", "|---|---|---|---|---|"]
    for r in rows:
        m, c = r["masked"], r["cut"]
        lines.append(f"| {r['removed_fraction']:.0%} | {m['forward_macs_kept']:.1%} → {c['forward_macs_kept']:.1%} | "
                     f"{m['ms_per_step_median']:.1f} ({m['ms_per_step_p25_p75'][0]:.1f}-{m['ms_per_step_p25_p75'][1]:.1f}) | "
                     f"{c['ms_per_step_median']:.1f} ({c['ms_per_step_p25_p75'][0]:.1f}-{c['ms_per_step_p25_p75'][1]:.1f}) | "
                     f"{r['paired_ratio_median']:.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
