"""Every registered pruning method through the shared loop on 2 gloo ranks: do the ranks agree?

For each method (its ``quick_options``), two spawned ranks (torch.distributed, gloo, DDP in
``edgeprune.train.train``) train a small dense model on digits for one epoch, then run ``method.fit``; each
rank reports the sha256 of its own plan (before any broadcast) and the sum of its returned weights. Equal
digests and sums mean the method's training, estimates and scoring stayed synchronised.

    nice -n 5 python benchmarks/distributed/methods_ddp.py --model cnn --out benchmarks/distributed/methods_ddp.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

HERE = Path(__file__).resolve().parent


def _rank(rank: int, port: int, method: str, model_name: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from edgeprune import distributed as D
    from edgeprune.data import load_dataset
    from edgeprune.methods import FitContext, get_method
    from edgeprune.methods.base import method_class
    from edgeprune.models import build_model
    from edgeprune.surgery import analyze
    from edgeprune.train import seed_everything, train

    D.init_from_env()
    d = load_dataset("digits", seed=0, limit=512)
    x, y, xv, yv = d.normalize(d.x_train), d.y_train, d.normalize(d.x_val), d.y_val
    seed_everything(0)
    model = build_model(model_name, d.input_shape, d.num_classes)
    train(model, x, y, epochs=1, batch_size=32, seed=0)
    ex = torch.as_tensor(x[:1])
    ctx = FitContext(x, y, xv, yv, ex, analyze(model, ex), "classification", 0.6, 1, 0,
                     {"epochs": 1, "batch_size": 32, "lr": 0.01, "weight_decay": 5e-4, "finetune_epochs": 1},
                     log=lambda m: None)
    t0 = time.perf_counter()
    res = get_method(method, method_class(method).quick_options()).fit(model, ctx)
    row = {"rank": rank, "seconds": time.perf_counter() - t0,
           "plan_sha256": hashlib.sha256(json.dumps(res.plan.to_dict(), sort_keys=True).encode()).hexdigest()[:16],
           "weight_sum": sum(float(p.detach().double().sum()) for p in res.model.parameters())}
    Path(f"{out}{rank}").write_text(json.dumps(row))
    D.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--methods", default="", help="comma list (default: every registered method)")
    ap.add_argument("--out", default=str(HERE / "methods_ddp.json"))
    a = ap.parse_args()
    from edgeprune.methods import list_methods

    rows = []
    for m in a.methods.split(",") if a.methods else list_methods():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        tmp = HERE / f".tmp-{m}"
        tmp.mkdir(exist_ok=True)
        err = None
        try:
            mp.start_processes(_rank, args=(port, m, a.model, str(tmp / "r")), nprocs=2, start_method="spawn")
        except Exception as e:  # noqa: BLE001 - a method that fails under DDP is a result
            err = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}"
        ranks = []
        for f in sorted(tmp.glob("r*")):
            ranks.append(json.loads(f.read_text()))
            f.unlink()
        tmp.rmdir()
        agree = len(ranks) == 2 and len({r["plan_sha256"] for r in ranks}) == 1 and \
            len({r["weight_sum"] for r in ranks}) == 1
        rows.append({"method": m, "error": err, "ranks": ranks, "ranks_agree": agree})
        print(f"{m}: {'agree' if agree else 'DIFFER'}{' ' + err if err else ''}", flush=True)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    doc = {"command": "python benchmarks/distributed/methods_ddp.py " + " ".join(sys.argv[1:]),
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "git": rev,
           "machine": f"{os.cpu_count()} CPUs, shared with other jobs", "loadavg_end": os.getloadavg(), "rows": rows}
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
