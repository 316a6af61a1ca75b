"""Surgery benchmark: analysis and compaction + verification time on a ResNet-18-sized model, and
the realised onnxruntime speed-up of the compact models next to their MACs ratio.

    python benchmarks/surgery/bench_surgery.py [--rounds 7] [--runs 30] [--out benchmarks/surgery]

Model: the built-in `resnet` with ResNet-18's stages (widths 64/128/256/512, 2 basic blocks each)
on 3x32x32 inputs (the CIFAR ResNet-18: 11.2 M parameters, 0.56 G MACs), random weights with
BatchNorm statistics estimated on 512 Fashion-MNIST training images (padded to 32x32, grey
repeated to 3 channels): a wrong channel mapping cannot hide behind identity BatchNorms.
Verification compares compact and masked model on 32 Fashion-MNIST test images (the pipeline
uses 256 on its small models; verification time grows linearly with their number).

Plans: the `l1` method's uniform widths at 50% and 75% of MACs removed, widths rounded to
multiples of 1 (odd widths) and of 16, and one 50% plan that also drops a residual branch.

Times (median of 3 repeats, one thread, in this process): `analyze` (Torch-Pruning graph, op
checks, cost table, probe compaction), compaction alone (`compact`), compaction + verification
(`compact_and_verify` given the graph: compact, masked reference, both run on the inputs, the
parameter check), and analyze + compaction + verification together.

Latency: onnxruntime, 1 thread, batch 1, through `edgeprune.compare.measure_latencies`: `--rounds`
interleaved passes over all models (shuffled order, one fresh `measure_host(repeats=1)` process
per model and pass), median over passes. Speed-up: median over passes of dense / compact p50
measured in the same pass.

Goals (the issue): compaction + verification < 2 s; realised speed-up >= 0.8 x the MACs ratio at
50% and 75% removed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeprune.compare import measure_latencies
from edgeprune.data import load_dataset
from edgeprune.methods.base import uniform_widths
from edgeprune.methods.magnitude import group_scores
from edgeprune.models import build_model
from edgeprune.runfolder import atomic_write_text, write_json
from edgeprune.surgery import analyze, compact, compact_and_verify, plan_from_scores
from edgeprune.surgery.graph import one_thread

SHAPE = (3, 32, 32)
GOAL_COMPACT_S = 2.0
GOAL_FRACTION = 0.8


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:  # noqa: BLE001 - no lscpu: fall back
        return platform.processor() or "unknown"


def fashion_as_rgb32(x: np.ndarray) -> torch.Tensor:
    """(N, 1, 28, 28) normalized images -> (N, 3, 32, 32): zero-padded, grey repeated to 3 channels."""
    t = torch.from_numpy(x)
    return nn.functional.pad(t, (2, 2, 2, 2)).repeat(1, 3, 1, 1).contiguous()


@torch.no_grad()
def estimate_bn_stats(model: nn.Module, x: torch.Tensor, batch: int = 64) -> None:
    """BatchNorm running statistics as the cumulative average over ``x`` (train-mode forwards, no weight change)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i in range(0, len(x), batch):
        model(x[i : i + batch])
    model.eval()


def timed(fn, repeats: int = 3):
    """(median seconds, last result) of ``repeats`` calls."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def make_plans(model, graph):
    scores = group_scores(model, graph)
    plans = {}
    for removed in (0.5, 0.75):
        for multiple in (1, 16):
            widths = uniform_widths(graph, 1 - removed, multiple)
            plans[f"removed{int(removed * 100)}-x{multiple}"] = (removed, plan_from_scores(
                graph, scores, widths, width_multiple=multiple))
    dropped = list(graph.branches)[-1:]  # the last identity block (widest stage)
    widths = uniform_widths(graph, 0.5, 16, dropped)
    plans["removed50-x16-drop1"] = (0.5, plan_from_scores(graph, scores, widths, width_multiple=16, dropped=dropped))
    return plans


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved latency passes (fresh process per model and pass)")
    ap.add_argument("--runs", type=int, default=30, help="timed inferences per process")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    a = ap.parse_args()
    load_start = os.getloadavg()
    torch.manual_seed(0)
    ds = load_dataset("fashion-mnist")
    calib = fashion_as_rgb32(ds.normalize(ds.x_train[:512]))
    inputs = fashion_as_rgb32(ds.normalize(ds.x_test[:32]))
    model = build_model("resnet", SHAPE, 10, widths=(64, 128, 256, 512), blocks=2)
    estimate_bn_stats(model, calib)
    example = torch.zeros(1, *SHAPE)
    with one_thread():
        t_analyze, graph = timed(lambda: analyze(model, example))
    dense = graph.dense_cost()
    plans = make_plans(model, graph)
    rows = [{"model": "dense", "macs": dense["macs"], "params": dense["params"], "dropped": []}]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = {"dense": tmp / "dense.onnx"}
        torch.onnx.export(model, (example,), str(paths["dense"]), dynamo=True, external_data=False)
        for name, (removed, plan) in plans.items():
            with one_thread():
                t_c, _ = timed(lambda: compact(model, plan, example, graph))
                t_cv, (small, rep) = timed(lambda: compact_and_verify(model, plan, example, inputs, graph))
            paths[name] = tmp / f"{name}.onnx"
            torch.onnx.export(small, (example,), str(paths[name]), dynamo=True, external_data=False)
            rows.append({"model": name, "removed_goal": removed, "macs": rep["macs"], "params": rep["params"],
                         "dropped": list(plan.dropped), "analyze_s": t_analyze, "compact_s": t_c, "compact_verify_s": t_cv,
                         "total_s": t_analyze + t_cv, "rel_diff": rep["rel_diff"], "n_verify_inputs": rep["n_inputs"]})
            print(f"{name}: compact {t_c:.2f} s, compact+verify {t_cv:.2f} s, rel diff {rep['rel_diff']:.1e}", flush=True)
        lat, how = measure_latencies(list(paths.values()), rounds=a.rounds, runs=a.runs, warmup=10)
    dense_rounds = lat[str(paths["dense"])]["per_round"]
    for r in rows:
        m = lat[str(paths[r["model"]])]
        r["p50_ms"] = m["latency_ms"]
        r["p50_spread_pct"] = m["latency_spread_pct"]
        r["p50_per_round_ms"] = m["per_round"]
        r["macs_ratio"] = dense["macs"] / r["macs"]
        r["speedup"] = statistics.median(d / c for d, c in zip(dense_rounds, m["per_round"]))
        r["realised_fraction"] = r["speedup"] / r["macs_ratio"]
    meta = {
        "command": f"python benchmarks/surgery/bench_surgery.py --rounds {a.rounds} --runs {a.runs}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores", "torch": torch.__version__,
        "load_average_1m_start": round(load_start[0], 2), "load_average_1m_end": round(os.getloadavg()[0], 2),
        "latency_how": how, "analyze_s": t_analyze, "dense": dense,
        "goals": {"compact_verify_s_below": GOAL_COMPACT_S, "realised_fraction_at_least": GOAL_FRACTION},
    }
    a.out.mkdir(parents=True, exist_ok=True)
    write_json(a.out / "results.json", {"meta": meta, "rows": rows})
    text = render(meta, rows, a)
    atomic_write_text(a.out / "results.md", text)
    print(text)


def render(meta: dict, rows: list[dict], a) -> str:
    dense = meta["dense"]
    compacted = [r for r in rows if "compact_verify_s" in r]
    worst_cv = max(r["compact_verify_s"] for r in compacted)
    goal_rows = [r for r in compacted if not r["dropped"]]
    worst_frac = min(r["realised_fraction"] for r in goal_rows)
    lines = [
        "# Surgery benchmark: analysis and compaction time, realised speed-up", "",
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['date']}; machine: {meta['machine']} (shared VM; 1-min load average {meta['load_average_1m_start']} "
        f"at the start, {meta['load_average_1m_end']} at the end); torch {meta['torch']}",
        "- Model: built-in `resnet`, widths 64/128/256/512, 2 basic blocks per stage, 3x32x32 input "
        f"({dense['params'] / 1e6:.1f} M params, {dense['macs'] / 1e6:.0f} M MACs), random weights, BatchNorm statistics "
        "estimated on 512 Fashion-MNIST training images (padded to 32x32, grey repeated to 3 channels). "
        "Plans: `l1` uniform widths; `drop1` also drops the last identity residual branch.",
        "- Times: measured in one process, one thread, median of 3; verification on 32 Fashion-MNIST test images "
        "(masked and compact model each run on all of them). "
        f"`analyze` (graph, op checks, cost table, probe compaction): {meta['analyze_s']:.2f} s.",
        f"- Latency: measured, onnxruntime, 1 thread, batch 1, {a.rounds} interleaved passes over all models (shuffled "
        f"order, a fresh process per model and pass, {a.runs} runs each), median over passes ({meta['latency_how']}). "
        "Speed-up: median over passes of dense / compact p50 of the same pass.", "",
        "| model | params | MACs (M) | MACs ratio | analyze s | compact s | compact+verify s | analyze+compact+verify s | rel. diff | p50 ms | spread | speed-up | speed-up / MACs ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t = (f"{r['analyze_s']:.2f} | {r['compact_s']:.2f} | {r['compact_verify_s']:.2f} | {r['total_s']:.2f} | "
             f"{r['rel_diff']:.1e}" if "compact_verify_s" in r else "— | — | — | — | —")
        lines.append(f"| {r['model']} | {r['params']:,} | {r['macs'] / 1e6:.0f} | {r['macs_ratio']:.2f}x | {t} | "
                     f"{r['p50_ms']:.2f} | {r['p50_spread_pct']:.0f}% | {r['speedup']:.2f}x | {r['realised_fraction']:.2f} |")
    noisy = [r["model"] for r in rows if r["p50_spread_pct"] > 25]
    lines += [
        "",
        "Spread: (max / min - 1) of a model's p50 over the passes"
        + (f"; above 25% ({', '.join(noisy)}) the machine's load changed during the run and that row's ratios are "
           "unreliable." if noisy else "."),
        "",
        f"Goals: compaction + verification < {GOAL_COMPACT_S:.0f} s: "
        f"{'met' if worst_cv < GOAL_COMPACT_S else 'MISSED'} (slowest {worst_cv:.2f} s); "
        f"speed-up >= {GOAL_FRACTION} x the MACs ratio at 50% and 75% removed: "
        f"{'met' if worst_frac >= GOAL_FRACTION else 'MISSED'} (lowest {worst_frac:.2f}).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
