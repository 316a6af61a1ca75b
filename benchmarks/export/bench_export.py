#!/usr/bin/env python3
"""Export benchmark: a small CNN trained on Fashion-MNIST, exported to all four formats.

Reports per artifact: file size, accuracy on the full 10k Fashion-MNIST test set (measured in
the artifact's real runtime by ``export_all``), and single-thread batch-1 latency on this host
(``edgeprune/bench/runner.py`` in a fresh process per measurement; the artifacts are
interleaved within each repetition so they see the same machine load; median over
repetitions of each process's median).

    python benchmarks/export/bench_export.py [--data-dir /usr/share/datasets/fashion-mnist] \
        [--epochs 2] [--reps 7] [--runs 300]

Writes ``results.md`` and ``results.json`` next to this script (or to ``--out``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]  # fmt: skip
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel mean/std on the [0, 1] scale


def load_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion(data_dir: Path):
    def x(name):
        a = load_idx(data_dir / name).astype(np.float32) / 255.0
        return ((a - MEAN) / STD)[:, None].astype(np.float32)

    def y(name):
        return load_idx(data_dir / name).astype(np.int64)

    return (x("train-images-idx3-ubyte.gz"), y("train-labels-idx1-ubyte.gz"),
            x("t10k-images-idx3-ubyte.gz"), y("t10k-labels-idx1-ubyte.gz"))  # fmt: skip


def make_model():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


def train(model, x, y, epochs: int, seed: int, log):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * (len(x) // 128 + 1))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for ep in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 128):
            b = perm[i : i + 128]
            loss = F.cross_entropy(model(xt[b].contiguous(memory_format=torch.channels_last)), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        log(f"epoch {ep + 1}/{epochs}: last loss {loss.item():.3f}, {time.perf_counter() - t0:.0f} s")
    return model.to(memory_format=torch.contiguous_format).eval()


def lscpu_model() -> tuple[str, int]:
    name = None
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return name or platform.processor() or "unknown", os.cpu_count() or 0


def measure(path: Path, runs: int, warmup: int) -> dict:
    """One fresh process running the torch-free bench runner on one artifact."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tf:
        out = Path(tf.name)
    try:
        subprocess.run(
            [sys.executable, str(REPO / "edgeprune" / "bench" / "runner.py"), str(path), "--runs", str(runs),
             "--warmup", str(warmup), "--threads", "1", "--json", str(out)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--calib", type=int, default=1000, help="training samples used for INT8 calibration")
    ap.add_argument("--reps", type=int, default=7, help="fresh-process repetitions per artifact")
    ap.add_argument("--runs", type=int, default=300, help="timed runs per process")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-limit", type=int, default=None, help="use only this many training images (smoke runs)")
    ap.add_argument("--out", type=Path, default=HERE, help="where results.md/json go")
    ap.add_argument("--work-dir", type=Path, default=None, help="where the artifacts go (default: a temp dir)")
    args = ap.parse_args(argv)

    import torch

    from edgeprune.export import FORMATS, export_all

    t_start = time.time()
    log = lambda m: print(f"[{time.time() - t_start:6.0f} s] {m}", flush=True)  # noqa: E731
    load_start = os.getloadavg()
    torch.set_num_threads(os.cpu_count() or 1)
    xtr, ytr, xte, yte = load_fashion(args.data_dir)
    if args.train_limit:
        xtr, ytr = xtr[: args.train_limit], ytr[: args.train_limit]
    log(f"Fashion-MNIST: {len(xtr)} train, {len(xte)} test")
    t0 = time.perf_counter()
    model = train(make_model(), xtr, ytr, args.epochs, args.seed, log)
    train_s = time.perf_counter() - t0

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="edgeprune-bench-export-"))
    rng = np.random.default_rng(args.seed)
    calib = xtr[rng.choice(len(xtr), size=min(args.calib, len(xtr)), replace=False)]
    t0 = time.perf_counter()
    res = export_all(model, torch.from_numpy(xte[:1]), calib=calib, test_x=xte, test_y=yte, out_dir=work,
                     formats=list(FORMATS), progress=log)  # fmt: skip
    export_s = time.perf_counter() - t0
    for f, e in res.items():
        log(f"{f}: ok={e['ok']} acc={e['metric']} drop={e['metric_drop']} error={e['error']}")

    ok = [f for f in FORMATS if res[f]["ok"]]
    lat: dict[str, list[float]] = {f: [] for f in ok}
    info: dict[str, dict] = {}
    for rep in range(args.reps):
        order = ok[rep % len(ok) :] + ok[: rep % len(ok)]  # rotate so no artifact always goes first
        for f in order:
            r = measure(work / res[f]["path"], args.runs, args.warmup)
            lat[f].append(r["p50_ms"] * 1e3)
            info[f] = {k: r[k] for k in ("runtime", "runtime_version", "provider", "runtime_footprint_mb",
                                          "peak_memory_mb", "init_ms")}  # fmt: skip
        log(f"latency rep {rep + 1}/{args.reps}: " + ", ".join(f"{f} {lat[f][-1]:.1f} us" for f in order))
    load_end = os.getloadavg()

    cpu, cores = lscpu_model()
    rows = []
    for f in FORMATS:
        e = res[f]
        xs = lat.get(f) or []
        rows.append({
            "format": f, "file": e["path"], "ok": e["ok"], "error": e["error"], "size_bytes": e["size_bytes"],
            "accuracy": e["metric"], "torch_accuracy": e["torch_metric"], "accuracy_drop": e["metric_drop"],
            "max_abs_diff": e["max_abs_diff"], "rel_diff": e["rel_diff"], "runtime": e["runtime"],
            "input_dtype": e["input_dtype"], "quant": e["quant"],
            "latency_us_median": statistics.median(xs) if xs else None,
            "latency_us_per_process": xs, **({"bench": info[f]} if f in info else {}),
        })  # fmt: skip
    by = {r["format"]: r for r in rows}

    def ratio(a, b):
        la, lb = by[a]["latency_us_median"], by[b]["latency_us_median"]
        return la / lb if la and lb else None

    tfl_ratio, onnx_ratio = ratio("tflite-int8", "tflite"), ratio("onnx-int8", "onnx")
    tfl_drop = by["tflite-int8"]["accuracy_drop"]
    goal_latency = tfl_ratio is not None and tfl_ratio <= 0.5
    goal_acc = tfl_drop is not None and tfl_drop <= 1.0
    candidates = [r for r in rows if r["ok"] and r["latency_us_median"] and (r["accuracy_drop"] or 0) <= 1.0]
    best = min(candidates, key=lambda r: r["latency_us_median"]) if candidates else None

    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, REPO), *(argv or sys.argv[1:])])
    summary = {
        "command": command,
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu, "cores": cores, "platform": platform.platform(),
                    "loadavg_start": load_start, "loadavg_end": load_end},  # fmt: skip
        "versions": {"torch": torch.__version__, "onnxruntime": res["onnx"]["runtime"],
                     "ai-edge-litert": res["tflite"]["runtime"]},  # fmt: skip
        "model": "Conv32-BN-ReLU-Pool, Conv64-BN-ReLU-Pool, FC128, FC10 (input 1x28x28, normalized)",
        "epochs": args.epochs,
        "train_seconds": round(train_s, 1),
        "export_seconds": round(export_s, 1),
        "calib_samples": len(calib),
        "n_test": res["onnx"]["n_test"],
        "latency_method": f"edgeprune/bench/runner.py, 1 thread, batch 1, {args.warmup} warmup + {args.runs} timed "
        f"runs per fresh process, {args.reps} processes per artifact interleaved; value = median of per-process medians",
        "tflite_int8_vs_fp32_latency": tfl_ratio,
        "onnx_int8_vs_fp32_latency": onnx_ratio,
        "goal_tflite_int8_latency_le_0.5x": goal_latency,
        "goal_tflite_int8_drop_le_1pt": goal_acc,
        "recommended": best["format"] if best else None,
        "artifacts": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "results.md").write_text(render_md(summary))
    log(f"wrote {args.out / 'results.md'}")
    return 0


def render_md(s: dict) -> str:
    def fmt(v, spec):
        return "—" if v is None else format(v, spec)

    m = s["machine"]
    lines = [
        "# Export benchmark: small CNN on Fashion-MNIST",
        "",
        f"- Command: `{s['command']}`",
        f"- Date (UTC): {s['date_utc']}",
        f"- Machine: {m['cpu']}, {m['cores']} cores ({m['platform']}); load average "
        f"{m['loadavg_start'][0]:.1f} at start, {m['loadavg_end'][0]:.1f} at end (shared host: other jobs were running)",
        f"- Versions: torch {s['versions']['torch']}, {s['versions']['onnxruntime']}, {s['versions']['ai-edge-litert']}",
        f"- Model: {s['model']}; trained {s['epochs']} epoch(s) in {s['train_seconds']} s; "
        f"INT8 calibrated on {s['calib_samples']} training images; export of all four took {s['export_seconds']} s",
        f"- Accuracy: full test set ({s['n_test']} images) run in each artifact's own runtime.",
        f"- Latency: {s['latency_method']}.",
        "",
        "| artifact | file | size (KB) | accuracy (%) | drop vs torch (pts) | max abs diff | latency (µs) | per-process medians (µs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in s["artifacts"]:
        if not r["ok"]:
            lines.append(f"| {r['format']} | — | — | — | — | — | — | failed: {r['error']} |")
            continue
        lines.append(
            f"| {r['format']} | {r['file']} | {r['size_bytes'] / 1024:.1f} | {fmt(r['accuracy'], '.2f')} | "
            f"{fmt(r['accuracy_drop'], '+.2f')} | {fmt(r['max_abs_diff'], '.2g')} | {fmt(r['latency_us_median'], '.1f')} | "
            f"{', '.join(f'{x:.0f}' for x in r['latency_us_per_process'])} |"
        )
    torch_acc = s["artifacts"][0]["torch_accuracy"]
    tr, orr = s["tflite_int8_vs_fp32_latency"], s["onnx_int8_vs_fp32_latency"]
    lines += [
        "",
        f"Torch (fp32, eager) accuracy: {torch_acc:.2f} %.",
        "",
        "## Verdict",
        "",
        f"- TFLite INT8 vs TFLite fp32 latency: {fmt(tr, '.2f')}x (goal ≤ 0.5x: "
        f"{'met' if s['goal_tflite_int8_latency_le_0.5x'] else 'NOT met'}); accuracy drop "
        f"{fmt(next(r for r in s['artifacts'] if r['format'] == 'tflite-int8')['accuracy_drop'], '+.2f')} pts "
        f"(goal ≤ 1 pt: {'met' if s['goal_tflite_int8_drop_le_1pt'] else 'NOT met'}).",
    ]
    if orr is not None:
        if orr > 1.0:
            lines.append(
                f"- ONNX INT8 (QDQ, S8S8) is SLOWER than ONNX fp32 on this CPU: {orr:.2f}x the fp32 latency in "
                "onnxruntime, for a 4x smaller file. Do not use it for CPU inference here; it is meant for "
                "TensorRT's explicit-INT8 path on a Jetson (build_engine.sh in a jetson bundle)."
            )
        else:
            lines.append(f"- ONNX INT8 vs ONNX fp32 latency: {orr:.2f}x.")
    if s["recommended"]:
        lines.append(
            f"- Recommended for CPU deployment: **{s['recommended']}** (fastest artifact within 1 point of torch)."
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
