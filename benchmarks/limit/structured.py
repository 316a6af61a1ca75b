"""How s* (one-shot, unstructured, no fine-tuning) relates to the build's structured pruning.

The quickstart model (digits CNN, the build's dense training: 12 epochs, lr 0.01, weight decay
5e-4, no L1) is pruned by the `l1` channel method at several MAC-removal levels, compacted, and
measured before and after the build's fine-tuning (6 epochs at half the lr). Next to it: s* with
the build guard's settings and with the full settings, and the actual one-shot unstructured limit.

    nice -n 10 python benchmarks/limit/structured.py        # -> structured.json, appended per seed
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "structured.jsonl"
LEVELS = [0.3, 0.5, 0.7, 0.8, 0.9, 0.95]


def run_seed(seed: int) -> dict:
    from edgeprune.data import load_dataset
    from edgeprune.limit import GUARD_SETTINGS, LimitSettings, actual_limit, estimate_limit
    from edgeprune.methods import FitContext, get_method
    from edgeprune.models import arch_spec, build_arch, example_for
    from edgeprune.surgery import analyze, compact_and_verify
    from edgeprune.train import evaluate, seed_everything, train

    torch.set_num_threads(1)
    d = load_dataset("digits", seed=seed)
    xtr, ytr, xva, yva = d.normalize(d.x_train), d.y_train, d.normalize(d.x_val), d.y_val
    xte, yte = d.normalize(d.x_test), d.y_test
    arch = arch_spec("cnn", d.input_shape, 10)
    seed_everything(seed)
    dense = build_arch(arch)
    opts = {"batch_size": 64, "lr": 0.01, "weight_decay": 5e-4, "seed": seed}
    train(dense, xtr, ytr, epochs=12, **opts)
    acc0 = evaluate(dense, xte, yte, "classification")
    guard = estimate_limit(dense, xtr, ytr, settings=LimitSettings(seed=seed, **GUARD_SETTINGS))
    full = estimate_limit(dense, xtr, ytr, settings=LimitSettings(seed=seed, steps=96, vectors=4, samples=0))
    act = actual_limit(dense, xte, yte)
    example = example_for(arch)
    rows = []
    for level in LEVELS:
        model = copy.deepcopy(dense)
        graph = analyze(model, example)
        ctx = FitContext(xtr, ytr, xva, yva, example, graph, "classification", 1 - level, 1, seed,
                         dict(opts, epochs=12, finetune_epochs=6), log=lambda m: None)
        plan = get_method("l1").fit(model, ctx).plan
        small, rep = compact_and_verify(model, plan, example, torch.from_numpy(xte[:64]), graph)
        before = evaluate(small, xte, yte, "classification")
        train(small, xtr, ytr, epochs=6, **dict(opts, lr=opts["lr"] * 0.5))
        after = evaluate(small, xte, yte, "classification")
        rows.append({"macs_removed": 1 - rep["macs"] / rep["dense"]["macs"],
                     "params_removed": 1 - rep["params"] / rep["dense"]["params"],
                     "acc_before_finetune": before, "acc_after_finetune": after})
    return {"seed": seed, "dense_test_acc": acc0, "s_star_guard": guard.s_star, "s_star_full": full.s_star,
            "seconds_guard": guard.seconds["total"], "seconds_full": full.seconds["total"],
            "actual_unstructured": act["limit"], "levels": rows, "loadavg": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


if __name__ == "__main__":
    have = {json.loads(x)["seed"] for x in OUT.read_text().splitlines()} if OUT.is_file() else set()
    for seed in (0, 1):
        if seed not in have:
            rec = run_seed(seed)
            with OUT.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            print(json.dumps({k: v for k, v in rec.items() if k != "levels"}), flush=True)
