"""Wall time of edgeprune's training loop with 1 vs N processes (torchrun, DDP, gloo) on Fashion-MNIST.

The same global batch and shuffle in every setting (``train.batch_size`` is the global batch; each of N
ranks takes batch/N), one torch thread per process, so N processes use N cores. For each setting the
script launches ``python -m torch.distributed.run --standalone --nproc_per_node N`` on itself (``--worker``)
and records, per run: the launcher's whole wall time (interpreter and torch start-up, rendezvous, data
loading, training, evaluation) and rank 0's time inside :func:`edgeprune.train.train` alone, plus the
test accuracy (the model has batch norm, so N > 1 differs from N = 1: each rank normalises its own
half-batch). Settings alternate (1, 2, 1, 2, ...) so a change in the machine's load hits both.

    nice -n 5 python benchmarks/distributed/bench_ddp.py --nprocs 1,2 --repeats 2 \
        --model cnn --train-limit 10000 --epochs 2 --out benchmarks/distributed/results.json
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def worker(a) -> None:
    import torch

    from edgeprune import distributed as D
    from edgeprune.data import load_dataset
    from edgeprune.models import build_model
    from edgeprune.train import evaluate, seed_everything, train

    torch.set_num_threads(1)
    D.init_from_env()
    d = load_dataset("fashion-mnist", seed=0, limit=a.train_limit or None)
    x, y = d.normalize(d.x_train), d.y_train
    seed_everything(0)
    model = build_model(a.model, d.input_shape, d.num_classes)
    t0 = time.perf_counter()
    hist = train(model, x, y, epochs=a.epochs, batch_size=a.batch_size, lr=0.01, seed=0)
    train_s = time.perf_counter() - t0
    if D.is_main():
        acc = evaluate(model, d.normalize(d.x_test), d.y_test, "classification")
        Path(a.result).write_text(json.dumps({"train_s": train_s, "test_accuracy": acc,
                                              "loss": [r["loss"] for r in hist.to_list()],
                                              "samples": len(x), "world": D.world_size()}))
    D.shutdown()


def launch(a, nproc: int, result: Path) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(Path(__file__).resolve()), "--worker", "--result", str(result), "--model", a.model,
           "--train-limit", str(a.train_limit), "--epochs", str(a.epochs), "--batch-size", str(a.batch_size)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    load = os.getloadavg()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    out = json.loads(result.read_text())
    return {"nproc": nproc, "wall_s": wall, **out, "loadavg_before": load, "loadavg_after": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--nprocs", default="1,2")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--train-limit", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default=str(HERE / "results.json"))
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    import tempfile

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeats):
            for n in (int(v) for v in a.nprocs.split(",")):
                r = launch(a, n, Path(tmp) / f"r{rep}-{n}.json")
                r["repeat"] = rep
                runs.append(r)
                print(f"nproc {n} repeat {rep}: wall {r['wall_s']:.1f} s, train {r['train_s']:.1f} s, "
                      f"acc {r['test_accuracy']:.2f}, load {r['loadavg_before'][0]:.1f}", flush=True)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    doc = {"command": "python benchmarks/distributed/bench_ddp.py " + " ".join(sys.argv[1:]),
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "git": rev,
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
           "note": "shared machine: other jobs ran at the same time (see loadavg per run)",
           "config": vars(a), "runs": runs}
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
