"""Predicted (s*) vs actual one-shot pruning limit, per model / L1 strength / seed.

Each case: train the dense model with task loss + lam*||w||_1 (weight decay off when lam > 0,
the build's 5e-4 when lam = 0), estimate s* (SLQ + threshold; also the build guard's cheap
settings and the zero-curvature correction from the same run), then sweep global one-shot
magnitude pruning (no fine-tuning) on the test set for the actual limit (-1 point).
Results are appended to results.jsonl as each case finishes; a rerun skips finished cases.

    nice -n 10 python benchmarks/limit/bench_limit.py            # run (resumable)
    python benchmarks/limit/bench_limit.py --summarize           # results.md + spectra.png
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

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.jsonl"

# name -> (dataset, model, model options, train samples (0 = all), epochs, lr, estimator settings)
SETUPS = {
    "digits-mlp": ("digits", "mlp", {}, 0, 60, 0.05, dict(steps=96, vectors=4, samples=2048)),
    "fmnist-mlp": ("fashion-mnist", "mlp", {}, 10000, 15, 0.05, dict(steps=64, vectors=2, samples=1024)),
    "fmnist-cnn": ("fashion-mnist", "cnn", {}, 5000, 10, 0.05, dict(steps=48, vectors=2, samples=512)),
}
#: test samples of the pruning sweep (0 = all); the CNN sweeps the first 5,000 of the 10,000 to fit a shared 2-core machine
SWEEP_TEST = {"fmnist-cnn": 5000}
# lambda = 0 (the build's plain training) as a reference on the cheap digits model only
LAMBDAS = {"digits-mlp": [0.0, 1e-4, 3e-4, 1e-3], "fmnist-mlp": [1e-4, 3e-4, 1e-3], "fmnist-cnn": [1e-4, 3e-4, 1e-3]}
SEEDS = [0, 1]


def case_key(setup: str, lam: float, seed: int) -> str:
    return f"{setup}|{lam:g}|{seed}"


def done_keys() -> set:
    if not RESULTS.is_file():
        return set()
    return {json.loads(line)["key"] for line in RESULTS.read_text().splitlines() if line.strip()}


def run_case(setup: str, lam: float, seed: int) -> dict:
    import torch

    from edgeprune.data import load_dataset
    from edgeprune.limit import GUARD_SETTINGS, L1Penalty, LimitSettings, actual_limit, estimate_limit
    from edgeprune.limit.slq import Density
    from edgeprune.limit.threshold import RadiusCurve, predict_limit, with_zero_mass
    from edgeprune.models import build_model
    from edgeprune.train import evaluate, seed_everything, train

    torch.set_num_threads(1)
    dataset, model_name, opts, limit, epochs, lr, est = SETUPS[setup]
    d = load_dataset(dataset, seed=seed, limit=limit or None)
    xtr, ytr = d.normalize(d.x_train), d.y_train
    n_test = SWEEP_TEST.get(setup) or len(d.x_test)
    xte, yte = d.normalize(d.x_test[:n_test]), d.y_test[:n_test]
    seed_everything(seed)
    model = build_model(model_name, d.input_shape, d.num_classes, **opts)
    t0 = time.perf_counter()
    train(model, xtr, ytr, epochs=epochs, lr=lr, seed=seed, weight_decay=0.0 if lam else 5e-4,
          extra_loss=L1Penalty(lam) if lam else None)
    t_train = time.perf_counter() - t0
    full = estimate_limit(model, xtr, ytr, settings=LimitSettings(seed=seed, **est))
    guard = estimate_limit(model, xtr, ytr, settings=LimitSettings(seed=seed, **GUARD_SETTINGS))
    w = np.concatenate([p.detach().double().reshape(-1).numpy() for p in
                        (m.weight for m in model.modules() if hasattr(m, "weight") and
                         isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))])
    s_zero = predict_limit(with_zero_mass(Density.from_dict(full.density), full.zero_fraction), full.epsilon,
                           RadiusCurve(w)) if full.zero_fraction > 0 else full.s_star
    t0 = time.perf_counter()
    act = actual_limit(model, xte, yte, tolerance=1.0)
    t_sweep = time.perf_counter() - t0
    return {
        "key": case_key(setup, lam, seed), "setup": setup, "dataset": dataset, "model": model_name, "options": opts,
        "train_samples": len(xtr), "test_samples": len(xte), "epochs": epochs, "lr": lr, "l1": lam, "seed": seed,
        "dense_test_acc": act["dense_metric"], "val_acc": evaluate(model, d.normalize(d.x_val), d.y_val, "classification"),
        "D": full.D, "epsilon": full.epsilon, "zero_fraction": full.zero_fraction,
        "s_star": full.s_star, "s_star_zero_mass": s_zero, "s_star_guard": guard.s_star,
        "actual": act["limit"], "diff": full.s_star - act["limit"],
        "settings": full.settings, "guard_settings": "{steps}x{vectors}x{samples}".format(**GUARD_SETTINGS), "hvps": full.hvps, "seconds_estimate": full.seconds["total"],
        "seconds_guard_estimate": guard.seconds["total"], "seconds_train": t_train, "seconds_sweep": t_sweep,
        "curve": act["curve"], "density": full.density, "loadavg": os.getloadavg(),
    }


def revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=HERE).stdout.strip()
    except OSError:
        return "?"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setups", default=",".join(SETUPS), help="comma-separated subset of " + ", ".join(SETUPS))
    ap.add_argument("--reverse", action="store_true", help="run the cases in reverse order (a second worker)")
    ap.add_argument("--summarize", action="store_true", help="write results.md and spectra.png from results.jsonl")
    a = ap.parse_args(argv)
    if a.summarize:
        from summarize import summarize, summarize_structured  # noqa: PLC0415 (sibling script)

        summarize(RESULTS, HERE)
        summarize_structured(HERE / "structured.jsonl", HERE)
        return
    cases = [(setup, lam, seed) for setup in a.setups.split(",") for lam in LAMBDAS[setup] for seed in SEEDS]
    for setup, lam, seed in (reversed(cases) if a.reverse else cases):
        key = case_key(setup, lam, seed)
        if key in done_keys():  # re-read: another worker may have finished it
            continue
        rec = run_case(setup, lam, seed)
        rec.update(machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
                   revision=revision(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        with RESULTS.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"{key}: s*={rec['s_star']:.3f} actual={rec['actual']:.3f} diff={rec['diff']:+.3f} "
              f"est {rec['seconds_estimate']:.1f}s train {rec['seconds_train']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
