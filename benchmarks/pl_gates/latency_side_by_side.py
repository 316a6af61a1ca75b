"""Latency of a study's compact models side by side, in one interleaved measurement.

Latency depends on the architecture, not on the weights. A harness study restored from its committed
``results.json`` has no models left for the rows it restored, but the uniform-width methods (l1, tp-taylor,
tp-groupnorm at 75% of the 32/64/128 ResNet all keep 15/31/63) are a built-in model at other widths: this script
rebuilds those from their widths and times them beside the ONNX files of the rows that were run (e.g. the
from-scratch pl-gates models in a compare cache), with the harness's own exporter and fresh-process host
benchmark (``edgeprune.compare.harness.measure_latencies``: interleaved rounds, 1 thread, batch 1).

    python benchmarks/pl_gates/latency_side_by_side.py --model resnet --widths 32,64,128 --widths 15,31,63 \\
        --onnx 'CACHE/onnx/pl-gates*.onnx' --input 1,28,28 --rounds 5 --out benchmarks/pl_gates/latency-fmnist81m.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from edgeprune.compare.counting import count_compact, widths_str
from edgeprune.compare.harness import export_onnx, measure_latencies
from edgeprune.models import build_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet")
    ap.add_argument("--widths", action="append", default=[], help="comma-separated widths of one built-in variant")
    ap.add_argument("--onnx", action="append", default=[], help="glob of ONNX files to time beside them")
    ap.add_argument("--input", default="1,28,28", help="input shape without the batch dimension")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--out", required=True, help="markdown file to write")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="latency-") as tmp:  # the rebuilt models' ONNX files, while timed
        return _run(a, Path(tmp), argv)


def _run(a, tmp: Path, argv) -> int:
    shape = tuple(int(x) for x in a.input.split(","))
    example = torch.zeros(1, *shape)
    models: dict[str, Path] = {}
    for w in a.widths:
        widths = [int(x) for x in w.split(",")]
        torch.manual_seed(0)
        m = build_model(a.model, shape, a.classes, widths=widths).eval()
        c = count_compact(m, example)
        label = f"{a.model} {w} (built: {widths_str(c['widths'])}, {c['macs']:,} MACs)"
        models[label] = tmp / f"{a.model}-{w.replace(',', '-')}.onnx"
        export_onnx(m, example, models[label])
    for pattern in a.onnx:
        for p in sorted(glob.glob(pattern)):
            models[Path(p).name] = Path(p)
    if not models:
        print("nothing to time: give --widths or --onnx", file=sys.stderr)
        return 2
    load0 = os.getloadavg()
    lat, how = measure_latencies(list(models.values()), rounds=a.rounds, runs=a.runs, warmup=10)
    load1 = os.getloadavg()
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Latency side by side (`benchmarks/pl_gates/latency_side_by_side.py`)",
        "",
        f"- Command: `python benchmarks/pl_gates/latency_side_by_side.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- Date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} (UTC), git {rev}",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), {platform.platform()}; "
        f"load average {[round(x, 2) for x in load0]} before, {[round(x, 2) for x in load1]} after",
        f"- How: {how}; {a.rounds} interleaved rounds x {a.runs} runs (+10 warm-up), batch 1, 1 thread; value = "
        "median over rounds of each round's p50 (MEASURED on this host)",
        "",
        "| model | latency ms | spread over rounds % |",
        "|---|---:|---:|",
    ]
    for label, p in models.items():
        r = lat[str(p)]
        lines.append(f"| {label} | {r['latency_ms']:.3f} | {r['latency_spread_pct']:.0f} |")
    others = [lat[str(p)]["latency_ms"] for label, p in models.items() if not label.startswith(a.model + " ")]
    if others:
        lines.append("")
        lines.append(f"ONNX files given: {len(others)}, median {statistics.median(others):.3f} ms.")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
