"""How large are the two forces on π? The task loss's straight-through gradient vs the complexity gradient.

Trains the built-in ``resnet`` with Bernoulli(π) units and branches (π fixed at ``--pi``, no
complexity term) for ``--epochs`` epochs, then, over ``--batches`` mini-batches with fresh samples
of ξ, collects every unit's straight-through gradient of the task loss ∂L/∂π_k and compares its
mean and standard deviation with the per-unit complexity gradient ∂C/∂π_k (C = ½ E[MACs]/MACs +
½ E[params]/params, the method's default α). Projected SGD moves π_k by
``pi_lr · (∂L/∂π_k + λ ∂C/∂π_k)`` per step: the ratios say what λ makes the cost as strong as the
task signal, and how noisy that signal is.

    python benchmarks/complexity_aware/gradient_scale.py --dataset digits --epochs 3 \
        --out benchmarks/complexity_aware/gradient-scale-digits.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from edgeprune.data import load_dataset
from edgeprune.methods.complexity_aware import BernoulliNetwork
from edgeprune.models import build_model
from edgeprune.surgery import analyze
from edgeprune.train import seed_everything, train


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--train-limit", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--pi", type=float, default=0.7)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    seed_everything(0)
    ds = load_dataset(args.dataset)
    n = args.train_limit or len(ds.x_train)
    x, y = ds.normalize(ds.x_train[:n]), ds.y_train[:n]
    model = build_model("resnet", ds.input_shape, 10)
    graph = analyze(model, torch.zeros(1, *ds.input_shape))
    net = BernoulliNetwork(model, graph, units=True, branches=True, pi_init=args.pi)
    net.generator = torch.Generator().manual_seed(0)
    for p in (net.pi, net.pi_b):
        p.requires_grad_(False)
    train(net, x, y, epochs=args.epochs, lr=args.lr, batch_size=64, generator=net.generator)
    for p in (net.pi, net.pi_b):
        p.requires_grad_(True)
    net.train()
    grads = []
    g = torch.Generator().manual_seed(1)
    for _ in range(args.batches):
        idx = torch.randint(0, n, (64,), generator=g)
        net.pi.grad = None
        F.cross_entropy(net(torch.from_numpy(x[idx.numpy()])), torch.from_numpy(y[idx.numpy()])).backward()
        grads.append(net.pi.grad.clone())
    gt = torch.stack(grads).double()
    dense = graph.dense_cost()
    pu = net.pi.detach().clone().requires_grad_(True)
    p, m = net.complexity(pu, net.pi_b.detach())
    (0.5 * m / dense["macs"] + 0.5 * p / dense["params"]).backward()
    gc = pu.grad.double()
    mean, std = gt.mean(0), gt.std(0)
    q = lambda v: {k: float(np.quantile(v.numpy(), f)) for k, f in (("p10", 0.1), ("median", 0.5), ("p90", 0.9))}  # noqa: E731
    res = {
        "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "loadavg": os.getloadavg(), "units": int(net.masks.n), "pi": args.pi, "batches": args.batches,
        "task_grad_mean_abs": q(mean.abs()), "task_grad_std": q(std),
        "complexity_grad": q(gc), "signal_to_noise_per_step": q(mean.abs() / std.clamp_min(1e-12)),
        "lambda_to_balance_mean_task_grad": q(mean.abs() / gc.clamp_min(1e-12)),
        "units_whose_mean_task_grad_favours_keeping": int((mean < 0).sum()),
    }
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
