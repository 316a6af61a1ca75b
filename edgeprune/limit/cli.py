"""`edgeprune limit`: train (or load) a model, predict its one-shot pruning limit s*, measure the
actual limit by a global magnitude sweep, and write limit.json + limit.png."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import ConfigError, EdgepruneError


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgeprune limit",
        description="How far can it be pruned: the predicted one-shot pruning limit s* (Zhang et al., NeurIPS 2024: "
                    "SLQ Hessian spectrum + loss noise + weight magnitudes) next to the actual limit (global one-shot "
                    "magnitude pruning of conv/linear weights, no fine-tuning, until the test metric drops by more "
                    "than --tolerance).")
    p.add_argument("--dataset", default="digits", help="dataset (digits, fashion-mnist, .npz, ...) [digits]")
    p.add_argument("--data-dir", help="directory of the dataset files (fashion-mnist)")
    p.add_argument("--data-limit", type=int, default=0, help="use only the first N training samples [all]")
    p.add_argument("--model", default="mlp", help="built-in model [mlp]")
    p.add_argument("--model-options", default="{}", metavar="JSON", help="model builder options, e.g. '{\"hidden\": [128, 64]}'")
    p.add_argument("--weights", help="state_dict (.pt) of a trained model: skip training")
    p.add_argument("--epochs", type=int, default=60, help="training epochs [60: the limit assumes a trained minimum]")
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate [0.05]")
    p.add_argument("--batch-size", type=int, default=64, help="mini-batch size (training and epsilon) [64]")
    p.add_argument("--l1", type=float, default=0.0, help="L1 strength lambda of task loss + lambda*||w||_1 [0]")
    p.add_argument("--weight-decay", type=float, help="L2 weight decay [5e-4 without --l1, 0 with it]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=96, help="Lanczos steps per start vector [96]")
    p.add_argument("--vectors", type=int, default=4, help="Rademacher start vectors averaged [4]")
    p.add_argument("--samples", type=int, default=2048, help="training samples the Hessian averages over (0 = all) [2048]")
    p.add_argument("--zero-mass", action="store_true", help="add the zero-curvature point mass (weights with no gradient)")
    p.add_argument("--tolerance", type=float, default=1.0, help="allowed test metric drop for the actual limit [1.0 point]")
    p.add_argument("--no-actual", action="store_true", help="predict only; skip the pruning sweep")
    p.add_argument("--out", type=Path, help="output folder [runs/limit-<dataset>-<model>]")
    p.add_argument("--threads", type=int, default=1, help="torch threads [1]")
    return p


def run(a: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from ..data import load_dataset
    from ..models import build_model, load_weights, model_task
    from ..train import seed_everything, train
    from .estimate import LimitSettings, estimate_limit
    from .plot import plot_limit
    from .slq import Density, prunable_weights
    from .sweep import L1Penalty, actual_limit

    try:
        opts = json.loads(a.model_options)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--model-options is not JSON ({e.msg}); pass e.g. '{{\"hidden\": [128, 64]}}'") from None
    for name in ("epochs", "steps", "vectors", "samples", "data_limit"):
        if getattr(a, name) < (1 if name in ("steps", "vectors") else 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be {'>= 1' if name in ('steps', 'vectors') else '>= 0'}")
    if a.l1 < 0 or a.tolerance < 0:
        raise ConfigError("--l1 and --tolerance must be >= 0")
    if ":" not in a.model and model_task(a.model) != "classification":
        raise ConfigError(f"model {a.model!r} is not a classifier; the pruning limit is implemented for classification")
    torch.set_num_threads(max(a.threads, 1))
    d = load_dataset(a.dataset, seed=a.seed, data_dir=a.data_dir, limit=a.data_limit or None)
    xtr, ytr, xte, yte = d.normalize(d.x_train), d.y_train, d.normalize(d.x_test), d.y_test
    seed_everything(a.seed)
    model = build_model(a.model, d.input_shape, d.num_classes, **{k: tuple(v) if isinstance(v, list) else v
                                                                 for k, v in opts.items()})
    t0 = time.perf_counter()
    if a.weights:
        load_weights(model, a.weights)
    else:
        wd = a.weight_decay if a.weight_decay is not None else (0.0 if a.l1 else 5e-4)
        train(model, xtr, ytr, epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, weight_decay=wd, seed=a.seed,
              extra_loss=L1Penalty(a.l1) if a.l1 else None)
    t_train = time.perf_counter() - t0
    st = LimitSettings(steps=a.steps, vectors=a.vectors, samples=a.samples, batch_size=a.batch_size,
                       zero_mass=a.zero_mass, seed=a.seed)
    est = estimate_limit(model, xtr, ytr, settings=st)
    act = None if a.no_actual else actual_limit(model, xte, yte, tolerance=a.tolerance)
    out = a.out or Path("runs") / f"limit-{d.name}-{a.model.rpartition(':')[2]}"
    out.mkdir(parents=True, exist_ok=True)
    w = np.concatenate([p.detach().double().reshape(-1).numpy() for _, p in prunable_weights(model)])
    plot_limit(out / "limit.png", Density.from_dict(est.density), est.epsilon, w, est.s_star, act,
               title=f"{a.model} on {d.name}, L1 {a.l1:g}")
    rec = {"dataset": d.name, "model": a.model, "model_options": opts, "l1": a.l1, "seed": a.seed,
           "train_seconds": t_train, **est.to_dict(), "actual": act,
           "difference": None if act is None else est.s_star - act["limit"]}
    (out / "limit.json").write_text(json.dumps(rec, indent=1))
    return {**rec, "out": str(out)}


def main(argv: list[str] | None = None) -> int:
    a = make_parser().parse_args(argv)
    try:
        r = run(a)
    except EdgepruneError as e:
        print(f"edgeprune: error: {e}", file=sys.stderr)
        return e.exit_code
    line = f"predicted limit s* = {r['s_star']:.3f} (epsilon {r['epsilon']:.3g}, {r['D']:,} weights, " \
           f"{r['seconds']['total']:.1f} s)"
    if r["actual"] is not None:
        line += f"; actual limit {r['actual']['limit']:.3f} (dense {r['actual']['dense_metric']:.2f}, " \
                f"-{r['actual']['tolerance']:g} point); difference {r['difference']:+.3f}"
    print(line)
    print(f"written: {r['out']}/limit.json, {r['out']}/limit.png")
    return 0
