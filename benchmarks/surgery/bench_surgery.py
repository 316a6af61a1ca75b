"""Surgery benchmark: compaction + verification time on a ResNet-18-sized model, and the
realised onnxruntime speed-up of the compact models next to their MACs ratio.

    python benchmarks/surgery/bench_surgery.py [--repeats 5] [--out benchmarks/surgery]

Model: the built-in `resnet` with ResNet-18's stages (widths 64/128/256/512, 2 basic blocks
each) on 3x32x32 inputs (the CIFAR ResNet-18: 11.2 M parameters, 0.56 G MACs). Plans: the
`l1` method's uniform widths at 50% and 75% of MACs removed, widths rounded to multiples
of 1 (odd widths) and of 16. Latency: edgeprune's bench runner (standalone, onnxruntime,
1 thread, batch 1), median over fresh processes, all models measured side by side in one
run; speed-up = dense p50 / compact p50.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from edgeprune.bench.host import measure_host
from edgeprune.methods.base import uniform_widths
from edgeprune.methods.magnitude import group_scores
from edgeprune.models import build_model
from edgeprune.surgery import analyze, compact_and_verify, plan_from_scores


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="fresh processes per model")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    a = ap.parse_args()
    torch.manual_seed(0)
    shape = (3, 32, 32)
    model = build_model("resnet", shape, 10, widths=(64, 128, 256, 512), blocks=2).eval()
    example = torch.zeros(1, *shape)
    inputs = torch.randn(32, *shape)
    t0 = time.perf_counter()
    graph = analyze(model, example)
    t_analyze = time.perf_counter() - t0
    dense = graph.dense_cost()
    scores = group_scores(model, graph)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.onnx.export(model, (example,), str(tmp / "dense.onnx"), dynamo=True, external_data=False)
        models = {"dense": (tmp / "dense.onnx", dense["macs"], dense["params"], None)}
        for removed in (0.5, 0.75):
            for multiple in (1, 16):
                widths = uniform_widths(graph, 1 - removed, multiple)
                plan = plan_from_scores(graph, scores, widths, width_multiple=multiple)
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    small, rep = compact_and_verify(model, plan, example, inputs, graph)
                    times.append(time.perf_counter() - t0)
                name = f"removed{int(removed * 100)}-x{multiple}"
                path = tmp / f"{name}.onnx"
                torch.onnx.export(small, (example,), str(path), dynamo=True, external_data=False)
                models[name] = (path, rep["macs"], rep["params"], {"compact_verify_s": statistics.median(times),
                                                                   "rel_diff": rep["rel_diff"]})
        lat = {n: measure_host(p, threads=1, runs=a.runs, warmup=10, repeats=a.repeats) for n, (p, *_) in models.items()}
    d50 = lat["dense"]["p50_ms"]
    for n, (_, macs, params, extra) in models.items():
        macs_ratio = dense["macs"] / macs
        speedup = d50 / lat[n]["p50_ms"]
        rows.append({"model": n, "macs": macs, "params": params, "macs_speedup": macs_ratio, "p50_ms": lat[n]["p50_ms"],
                     "p50_spread_pct": lat[n].get("p50_spread_pct"), "speedup": speedup,
                     "realised_fraction": speedup / macs_ratio, **(extra or {})})
    meta = {"load_average_1m": round(__import__("os").getloadavg()[0], 2),
            "date": date.today().isoformat(), "machine": f"{cpu_name()}, {__import__('os').cpu_count()} cores",
            "torch": torch.__version__, "analyze_s": t_analyze, "command": "python benchmarks/surgery/bench_surgery.py "
            f"--repeats {a.repeats} --runs {a.runs}", "dense": dense}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        "# Surgery benchmark: compaction time and realised speed-up", "",
        f"- Command: `{meta['command']}`", f"- Date: {meta['date']}; machine: {meta['machine']} (shared, noisy VM; 1-min load average at the end: {meta['load_average_1m']}); torch {meta['torch']}",
        "- Model: built-in `resnet`, widths 64/128/256/512, 2 basic blocks per stage, 3x32x32 input "
        f"({dense['params'] / 1e6:.1f} M params, {dense['macs'] / 1e6:.0f} M MACs). Plans: `l1` uniform widths.",
        f"- Latency: onnxruntime via edgeprune's runner, 1 thread, batch 1, median over {a.repeats} fresh processes x {a.runs} runs, measured side by side in one run.",
        f"- Dependency analysis (Torch-Pruning graph + cost table): {t_analyze:.2f} s.", "",
        "| model | params | MACs (M) | MACs ratio | compact+verify s | p50 ms | spread | speed-up | speed-up / MACs ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cv = f"{r['compact_verify_s']:.2f}" if "compact_verify_s" in r else "—"
        lines.append(f"| {r['model']} | {r['params']:,} | {r['macs'] / 1e6:.0f} | {r['macs_speedup']:.2f}x | {cv} | "
                     f"{r['p50_ms']:.2f} | {r['p50_spread_pct']:.0f}% | {r['speedup']:.2f}x | {r['realised_fraction']:.2f} |")
    (a.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
