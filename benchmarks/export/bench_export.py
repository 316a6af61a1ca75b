#!/usr/bin/env python3
"""Export benchmark: a built-in model, unpruned and L1-pruned to 50% MACs, exported to all four formats.

For Fashion-MNIST (and, for the calibrator comparison, the 8x8 digits) this script trains
edgeprune's built-in ``--model`` (default ``resnet``) the way the pipeline does
(``edgeprune.train.train``, the config's default optimizer settings), prunes a copy with the
pipeline's ``l1`` method to 50% of the dense MACs (Raspberry Pi 4's width multiple, 4),
compacts it (``compact_and_verify``) and fine-tunes it, then exports both models with
``export_all`` (the config's default 256 calibration samples: the first 256 training images,
as the export stage takes them).

Reports per artifact: file size, accuracy on the whole test split in the artifact's own
runtime (Fashion-MNIST: 10k images); for Fashion-MNIST also single-thread batch-1 latency on
this host (``edgeprune/bench/runner.py`` in a fresh process per measurement; all artifacts
interleaved within each round, rotated so none always goes first; median over rounds of
each process's median, with the spread over rounds). It also converts every model once more
with litert-torch's own HistogramObserver activation calibration (accuracy only: same graph,
same kernels) to measure what the plain min/max calibrator costs or gains, and measures the
peak RSS that ONNX export + quantization add to the exporting process.

    python benchmarks/export/bench_export.py [--data-dir /usr/share/datasets/fashion-mnist] \
        [--model resnet] [--epochs 3] [--finetune-epochs 1] [--reps 7] [--runs 300]

Writes ``results.md`` and ``results.json`` next to this script (or to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

KEEP = 0.5  # fraction of dense MACs the pruned model keeps
WIDTH_MULTIPLE = 4  # rpi4's runtime.width_multiple
DIGITS_EPOCHS = 12  # the config's default train.epochs (digits trains in seconds)


# --------------------------------------------------------------------------- models


def normalized(ds) -> dict:
    """The pipeline's arrays: every split normalized with the training split's mean/std."""
    return {"x_train": ds.normalize(ds.x_train), "y_train": ds.y_train, "x_val": ds.normalize(ds.x_val),
            "y_val": ds.y_val, "x_test": ds.normalize(ds.x_test), "y_test": ds.y_test}  # fmt: skip


def train_opts(seed: int) -> dict:
    from edgeprune import config

    t = config.defaults()["train"]
    return {"batch_size": t["batch_size"], "lr": t["lr"], "weight_decay": t["weight_decay"], "seed": seed}


def train_dense(model_name: str, a: dict, epochs: int, seed: int, log):
    from edgeprune.models import build_model
    from edgeprune.train import seed_everything, train

    seed_everything(seed)
    model = build_model(model_name, a["x_train"].shape[1:], 10)
    t0 = time.perf_counter()
    train(model, a["x_train"], a["y_train"], epochs=epochs, on_epoch=lambda r: log(f"  dense epoch {r['epoch']}: "
          f"loss {r['loss']:.3f}, {r['seconds']:.0f} s"), **train_opts(seed))  # fmt: skip
    return model.eval(), time.perf_counter() - t0


def prune_l1(dense, a: dict, epochs: int, finetune_epochs: int, seed: int, log):
    """The pipeline's prune -> compact -> finetune stages with the ``l1`` method, on a copy of ``dense``."""
    import copy

    import torch

    from edgeprune.methods import FitContext, get_method
    from edgeprune.surgery import analyze, compact_and_verify
    from edgeprune.train import seed_everything, train

    example = torch.from_numpy(a["x_test"][:1])
    model = copy.deepcopy(dense).eval()
    graph = analyze(model, example)
    ctx = FitContext(a["x_train"], a["y_train"], a["x_val"], a["y_val"], example, graph, "classification", KEEP,
                     WIDTH_MULTIPLE, seed, dict(train_opts(seed), epochs=epochs, finetune_epochs=finetune_epochs),
                     progress=None, log=log)  # fmt: skip
    result = get_method("l1").fit(model, ctx)
    small, report = compact_and_verify(result.model, result.plan, example, torch.from_numpy(a["x_val"][:64]), graph)
    seed_everything(seed)
    t0 = time.perf_counter()
    train(small, a["x_train"], a["y_train"], epochs=finetune_epochs, **train_opts(seed))
    info = {"macs": int(report["macs"]), "dense_macs": int(report["dense"]["macs"]), "params": int(report["params"]),
            "dense_params": int(report["dense"]["params"]), "macs_kept": report["macs"] / report["dense"]["macs"],
            "compact_rel_diff": report["rel_diff"], "finetune_seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    return small.eval(), info


# --------------------------------------------------------------------------- exports


def histogram_int8(model, a: dict, calib: np.ndarray, work: Path) -> dict:
    """TFLite INT8 with litert-torch's HistogramObserver activations (the worker's ``observer`` job key)."""
    import torch

    from edgeprune.export.runtimes import TfliteRunner
    from edgeprune.metrics import get_metric

    work.mkdir(parents=True, exist_ok=True)
    example = torch.from_numpy(a["x_test"][:1])
    with torch.no_grad():
        torch.export.save(torch.export.export(model, (example,)), str(work / "model.pt2"))
    np.save(work / "calib.npy", calib)
    out = work / "model.histogram.int8.tflite"
    job = {"program": str(work / "model.pt2"), "example_shape": list(example.shape), "calib": str(work / "calib.npy"),
           "log": str(work / "histogram.log"), "result": str(work / "histogram.json"),
           "jobs": [{"format": "tflite-int8", "out": str(out), "observer": "histogram"}]}  # fmt: skip
    (work / "histogram_job.json").write_text(json.dumps(job))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    subprocess.run([sys.executable, "-m", "edgeprune.export.tflite_worker", str(work / "histogram_job.json")],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)  # fmt: skip
    r = json.loads((work / "histogram.json").read_text())["tflite-int8"]
    if not r["ok"]:
        return {"ok": False, "error": r["error"]}
    runner = TfliteRunner(out)
    acc = float(get_metric("accuracy")(runner.run(a["x_test"]), a["y_test"]))
    return {"ok": True, "accuracy": acc, "quantizer": r["quantizer"], "quant": runner.quant, "size_bytes": out.stat().st_size}


ONNX_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, numpy as np, torch
    from pathlib import Path
    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    model = torch.load(sys.argv[1], weights_only=False).eval()
    calib = np.load(sys.argv[2])
    from edgeprune.export.onnx_export import export_onnx_fp32, quantize_onnx_int8
    with torch.no_grad():
        model(torch.from_numpy(calib))
    before = hwm()
    d = Path(sys.argv[3])
    export_onnx_fp32(model, torch.from_numpy(calib[:1]), d / "m.onnx", 18)
    quantize_onnx_int8(d / "m.onnx", d / "m.int8.onnx", calib, d)
    print(json.dumps({"before_mb": before, "after_mb": hwm()}))
    """
)


def onnx_export_memory(model, calib: np.ndarray, work: Path) -> dict:
    """Peak RSS (VmHWM) of a fresh process with torch + model + calibration data loaded, before and after
    ``export_onnx_fp32`` + ``quantize_onnx_int8``; and the peak RSS of a bare ``import torch`` process."""
    import torch

    work.mkdir(parents=True, exist_ok=True)
    torch.save(model, work / "model.pickle.pt")
    np.save(work / "calib.npy", calib)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, "-c", ONNX_MEMORY_SCRIPT, str(work / "model.pickle.pt"), str(work / "calib.npy"),
                          str(work)], check=True, capture_output=True, text=True, env=env)  # fmt: skip
    r = json.loads(out.stdout.strip().splitlines()[-1])
    bare = subprocess.run([sys.executable, "-c", "import torch\nfor l in open('/proc/self/status'):\n"
                           "    l.startswith('VmHWM') and print(int(l.split()[1]) / 1024)"],
                          check=True, capture_output=True, text=True).stdout  # fmt: skip
    r["torch_import_only_mb"] = float(bare.strip().splitlines()[-1])
    r["delta_mb"] = r["after_mb"] - r["before_mb"]
    return r


def export_model(model, a: dict, calib: np.ndarray, work: Path, log) -> tuple[dict, dict, float]:
    import torch

    from edgeprune.export import FORMATS, export_all

    t0 = time.perf_counter()
    res = export_all(model, torch.from_numpy(a["x_test"][:1]), calib=calib, test_x=a["x_test"], test_y=a["y_test"],
                     out_dir=work, formats=list(FORMATS), progress=lambda m: log(f"    {m}"))  # fmt: skip
    seconds = time.perf_counter() - t0
    hist = histogram_int8(model, a, calib, work / "histogram")
    for f, e in res.items():
        log(f"  {f}: ok={e['ok']} acc={e['metric']} drop={e['metric_drop']} error={e['error']}")
    log(f"  tflite-int8 with HistogramObserver: {hist}")
    return res, hist, seconds


# --------------------------------------------------------------------------- latency


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


def interleaved_latency(paths: dict[str, Path], reps: int, runs: int, warmup: int, log) -> dict[str, dict]:
    """Median p50 (µs) over ``reps`` rounds; each round runs every artifact once, in a rotated order."""
    keys = list(paths)
    per: dict[str, list[float]] = {k: [] for k in keys}
    for rep in range(reps):
        order = keys[rep % len(keys) :] + keys[: rep % len(keys)]
        for k in order:
            per[k].append(measure(paths[k], runs, warmup)["p50_ms"] * 1e3)
        log(f"latency round {rep + 1}/{reps} done")
    return {k: {"median_us": statistics.median(v), "min_us": min(v), "max_us": max(v),
                "spread_pct": 100.0 * (max(v) / min(v) - 1.0), "per_round_us": v} for k, v in per.items()}  # fmt: skip


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--model", default="resnet", choices=["cnn", "resnet"], help="built-in model")
    ap.add_argument("--epochs", type=int, default=3, help="dense training epochs on Fashion-MNIST")
    ap.add_argument("--finetune-epochs", type=int, default=1, help="fine-tuning epochs of the pruned model")
    ap.add_argument("--reps", type=int, default=7, help="interleaved fresh-process rounds per artifact")
    ap.add_argument("--runs", type=int, default=300, help="timed runs per process")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-limit", type=int, default=None, help="use only this many training images (smoke runs)")
    ap.add_argument("--out", type=Path, default=HERE, help="where results.md/json go")
    ap.add_argument("--work-dir", type=Path, default=None, help="where the artifacts go (default: a temp dir)")
    args = ap.parse_args(argv)

    import torch

    from edgeprune import config
    from edgeprune.data import load_dataset
    from edgeprune.export import FORMATS

    t_start = time.time()
    log = lambda m: print(f"[{time.time() - t_start:6.0f} s] {m}", flush=True)  # noqa: E731
    load_start = os.getloadavg()
    # one thread: on this shared 2-core host two torch threads contend pathologically (tests/test_export.py)
    torch.set_num_threads(1)
    os.environ["EDGEPRUNE_EXPORT_THREADS"] = "1"
    n_calib = config.defaults()["export"]["calib_samples"]
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="edgeprune-bench-export-"))
    datasets = {}
    for ds_name, epochs in (("digits", DIGITS_EPOCHS), ("fashion-mnist", args.epochs)):
        ds = load_dataset(ds_name, seed=args.seed, data_dir=args.data_dir if ds_name == "fashion-mnist" else None,
                          limit=args.train_limit if ds_name == "fashion-mnist" else None)  # fmt: skip
        a = normalized(ds)
        log(f"{ds_name}: {len(a['x_train'])} train, {len(a['x_test'])} test; training {args.model} for {epochs} epoch(s)")
        dense, train_s = train_dense(args.model, a, epochs, args.seed, log)
        pruned, prune_info = prune_l1(dense, a, epochs, args.finetune_epochs, args.seed, log)
        log(f"  pruned: {prune_info}")
        calib = a["x_train"][:n_calib]
        variants = {}
        for variant, model in (("unpruned", dense), ("pruned", pruned)):
            log(f"{ds_name} / {variant}: exporting")
            res, hist, export_s = export_model(model, a, calib, work / ds_name / variant, log)
            variants[variant] = {"export": res, "histogram": hist, "export_seconds": round(export_s, 1),
                                 "dir": work / ds_name / variant, "model": model}  # fmt: skip
        datasets[ds_name] = {"n_train": len(a["x_train"]), "n_test": len(a["x_test"]), "epochs": epochs,
                             "train_seconds": round(train_s, 1), "prune": prune_info, "variants": variants,
                             "calib": calib}  # fmt: skip

    fm = datasets["fashion-mnist"]
    log("ONNX export memory (fresh process)")
    memory = onnx_export_memory(fm["variants"]["unpruned"]["model"], fm["calib"], work / "memory")
    log(f"  {memory}")
    paths = {(v, f): fm["variants"][v]["dir"] / fm["variants"][v]["export"][f]["path"]
             for v in fm["variants"] for f in FORMATS if fm["variants"][v]["export"][f]["ok"]}  # fmt: skip
    lat = interleaved_latency({f"{v}/{f}": p for (v, f), p in paths.items()}, args.reps, args.runs, args.warmup, log)
    load_end = os.getloadavg()

    summary = summarize(args, datasets, lat, memory, load_start, load_end, n_calib, argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "results.md").write_text(render_md(summary))
    log(f"wrote {args.out / 'results.md'}")
    return 0


def summarize(args, datasets, lat, memory, load_start, load_end, n_calib, argv) -> dict:
    import torch

    from edgeprune.export import FORMATS

    cpu, cores = lscpu_model()
    out_sets = {}
    for ds_name, d in datasets.items():
        variants = {}
        for v, vd in d["variants"].items():
            rows = []
            for f in FORMATS:
                e = vd["export"][f]
                lt = lat.get(f"{v}/{f}") if ds_name == "fashion-mnist" else None
                rows.append({
                    "format": f, "file": e["path"], "ok": e["ok"], "error": e["error"], "size_bytes": e["size_bytes"],
                    "accuracy": e["metric"], "torch_accuracy": e["torch_metric"], "accuracy_drop": e["metric_drop"],
                    "max_abs_diff": e["max_abs_diff"], "rel_diff": e["rel_diff"], "runtime": e["runtime"],
                    "input_dtype": e["input_dtype"], "quant": e["quant"], "quantizer": e["details"].get("quantizer"),
                    "latency_us_median": lt["median_us"] if lt else None,
                    "latency_spread_pct": lt["spread_pct"] if lt else None,
                    "latency_us_per_round": lt["per_round_us"] if lt else None,
                })  # fmt: skip
            by = {r["format"]: r for r in rows}
            variants[v] = {"artifacts": rows, "histogram_tflite_int8": vd["histogram"],
                           "export_seconds": vd["export_seconds"], **ratios(by)}  # fmt: skip
        out_sets[ds_name] = {k: d[k] for k in ("n_train", "n_test", "epochs", "train_seconds", "prune")}
        out_sets[ds_name]["variants"] = variants
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, REPO), *(argv or sys.argv[1:])])
    some = datasets["fashion-mnist"]["variants"]["unpruned"]["export"]
    return {
        "command": command,
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu, "cores": cores, "platform": platform.platform(),
                    "loadavg_start": load_start, "loadavg_end": load_end},  # fmt: skip
        "versions": {"torch": torch.__version__, "onnxruntime": some["onnx"]["runtime"],
                     "ai-edge-litert": some["tflite"]["runtime"]},  # fmt: skip
        "model": args.model,
        "pruning": f"l1 (edgeprune.methods), keep {KEEP:.0%} of dense MACs, width multiple {WIDTH_MULTIPLE}, "
        f"{args.finetune_epochs} fine-tuning epoch(s)",
        "calib_samples": n_calib,
        "latency_method": f"edgeprune/bench/runner.py, 1 thread, batch 1, {args.warmup} warmup + {args.runs} timed "
        f"runs per fresh process; {args.reps} rounds, each running every Fashion-MNIST artifact once (rotated order); "
        "value = median over rounds of each process's p50, spread = max/min - 1 over rounds",
        "onnx_export_memory": memory,
        "datasets": out_sets,
    }


def ratios(by: dict) -> dict:
    """Latency and accuracy comparisons of one model's artifacts (goal: TFLite INT8 <= 0.5x fp32, within 1 pt)."""
    def lat_ratio(a, b):
        la, lb = by[a]["latency_us_median"], by[b]["latency_us_median"]
        return la / lb if la and lb else None

    def acc_gap(a, b):
        xa, xb = by[a]["accuracy"], by[b]["accuracy"]
        return xb - xa if xa is not None and xb is not None else None

    tr, orr = lat_ratio("tflite-int8", "tflite"), lat_ratio("onnx-int8", "onnx")
    gap = acc_gap("tflite-int8", "tflite")
    ok = [r for r in by.values() if r["ok"] and r["latency_us_median"] and (r["accuracy_drop"] or 0) <= 1.0]
    best = min(ok, key=lambda r: r["latency_us_median"])["format"] if ok else None
    return {
        "tflite_int8_vs_fp32_latency": tr, "onnx_int8_vs_fp32_latency": orr,
        "tflite_int8_accuracy_below_fp32_pts": gap,
        "goal_tflite_int8_latency_le_0.5x": tr is not None and tr <= 0.5,
        "goal_tflite_int8_within_1pt_of_fp32": gap is not None and gap <= 1.0,
        "fastest_within_1pt_on_this_host": best,
    }  # fmt: skip


# --------------------------------------------------------------------------- results.md


def _f(v, spec):
    return "—" if v is None else format(v, spec)


def render_md(s: dict) -> str:
    m = s["machine"]
    fm = s["datasets"]["fashion-mnist"]
    lines = [
        f"# Export benchmark: built-in `{s['model']}` on Fashion-MNIST, unpruned and L1-pruned",
        "",
        f"- Command: `{s['command']}`",
        f"- Date (UTC): {s['date_utc']}",
        f"- Machine: {m['cpu']}, {m['cores']} cores ({m['platform']}); load average (1 min) "
        f"{m['loadavg_start'][0]:.1f} at start, {m['loadavg_end'][0]:.1f} at end (shared host: other jobs were running)",
        f"- Versions: torch {s['versions']['torch']}, {s['versions']['onnxruntime']}, {s['versions']['ai-edge-litert']}",
        f"- Training: Fashion-MNIST {fm['n_train']} training images, {fm['epochs']} dense epoch(s) "
        f"({fm['train_seconds']} s); pruning: {s['pruning']} -> {fm['prune']['macs_kept']:.1%} of the MACs "
        f"({fm['prune']['macs']:,} of {fm['prune']['dense_macs']:,}), {fm['prune']['params']:,} of "
        f"{fm['prune']['dense_params']:,} parameters.",
        f"- INT8 calibration: the first {s['calib_samples']} (normalized) training images, the export stage's default.",
        f"- Accuracy: measured on the whole test split ({fm['n_test']} images) in each artifact's own runtime.",
        f"- Latency: measured on this host: {s['latency_method']}.",
        "",
    ]
    for v, title in (("unpruned", "Unpruned"), ("pruned", f"L1-pruned to {fm['prune']['macs_kept']:.0%} of the MACs")):
        vd = fm["variants"][v]
        lines += [
            f"## {title}",
            "",
            "| artifact | size (KB) | accuracy (%) | drop vs torch (pts) | max abs diff | latency p50 (µs) | spread over rounds |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in vd["artifacts"]:
            if not r["ok"]:
                lines.append(f"| {r['format']} | — | — | — | — | — | failed: {r['error']} |")
                continue
            lines.append(
                f"| {r['format']} | {r['size_bytes'] / 1024:.1f} | {_f(r['accuracy'], '.2f')} | "
                f"{_f(r['accuracy_drop'], '+.2f')} | {_f(r['max_abs_diff'], '.2g')} | {_f(r['latency_us_median'], '.1f')} | "
                f"{_f(r['latency_spread_pct'], '.0f')}% |"
            )
        torch_acc = vd["artifacts"][0]["torch_accuracy"]
        tr, orr, gap = vd["tflite_int8_vs_fp32_latency"], vd["onnx_int8_vs_fp32_latency"], vd["tflite_int8_accuracy_below_fp32_pts"]
        lines += [
            "",
            f"Torch (fp32, eager) accuracy: {torch_acc:.2f} %. TFLite INT8 vs TFLite fp32: latency {_f(tr, '.2f')}x "
            f"(goal ≤ 0.5x: {'met' if vd['goal_tflite_int8_latency_le_0.5x'] else 'NOT met'}); accuracy fp32 minus INT8 "
            f"{_f(gap, '+.2f')} pts (goal ≤ 1 pt: {'met' if vd['goal_tflite_int8_within_1pt_of_fp32'] else 'NOT met'}). "
            f"ONNX INT8 vs ONNX fp32 latency: {_f(orr, '.2f')}x"
            + (" (SLOWER than fp32 in onnxruntime on this CPU)." if orr and orr > 1 else "."),
            "",
        ]
    lines += calibrator_section(s) + memory_section(s) + recommendations(s)
    return "\n".join(lines)


def calibrator_section(s: dict) -> list[str]:
    lines = [
        "## TFLite INT8 activation calibrator: plain min/max (shipped) vs litert-torch's HistogramObserver",
        "",
        "Same model, same calibration samples, same int8 in/out graph; only the activation observer differs. "
        "Accuracy in ai-edge-litert on the whole test split.",
        "",
        "| dataset | model | test images | torch fp32 (%) | INT8 min/max (%) | INT8 histogram (%) | min/max - histogram (pts) |",
        "|---|---|---|---|---|---|---|",
    ]
    for ds_name, d in s["datasets"].items():
        for v, vd in d["variants"].items():
            mm = next(r for r in vd["artifacts"] if r["format"] == "tflite-int8")
            h = vd["histogram_tflite_int8"]
            ha = h.get("accuracy") if h.get("ok") else None
            diff = mm["accuracy"] - ha if ha is not None and mm["accuracy"] is not None else None
            lines.append(f"| {ds_name} | {s['model']} {v} | {d['n_test']} | {_f(mm['torch_accuracy'], '.2f')} | "
                         f"{_f(mm['accuracy'], '.2f')} | {_f(ha, '.2f')} | {_f(diff, '+.2f')} |")  # fmt: skip
    return lines + [""]


def memory_section(s: dict) -> list[str]:
    mem = s["onnx_export_memory"]
    return [
        "## ONNX export memory",
        "",
        f"Measured once in a fresh process (VmHWM, unpruned Fashion-MNIST `{s['model']}`, {s['calib_samples']} "
        f"calibration images): peak RSS {mem['before_mb']:.0f} MB with torch, the model and the data loaded; "
        f"{mem['after_mb']:.0f} MB after `export_onnx_fp32` + `quantize_onnx_int8` (+{mem['delta_mb']:.0f} MB). A bare "
        f"`import torch` process peaks at {mem['torch_import_only_mb']:.0f} MB, which a child process for the ONNX "
        "export would add on top; so ONNX export stays in the pipeline process (litert-torch, which can abort or "
        "exhaust memory in its MLIR converter, runs in a child).",
        "",
    ]


def recommendations(s: dict) -> list[str]:
    fm = s["datasets"]["fashion-mnist"]["variants"]
    tr = [fm[v]["tflite_int8_vs_fp32_latency"] for v in fm]
    orr = [fm[v]["onnx_int8_vs_fp32_latency"] for v in fm]
    best = {v: fm[v]["fastest_within_1pt_on_this_host"] for v in fm}
    onnx_slower = all(r and r > 1 for r in orr)
    return [
        "## Recommendation per target platform",
        "",
        "Measured here: x86 host CPU only, one thread. What the targets run is taken from their profiles "
        "(edgeprune/targets/*.toml) and shared/DEVICES.md; nothing below was measured on a device.",
        "",
        f"- **x86 host** (measured): fastest artifact within 1 point of torch: {best['unpruned']} (unpruned), "
        f"{best['pruned']} (pruned). TFLite INT8 runs at {', '.join(_f(r, '.2f') + 'x' for r in tr)} the TFLite fp32 "
        "latency (unpruned, pruned).",
        "- **Raspberry Pi 4 / 5** (ai_edge_litert on Cortex-A, XNNPACK): ship `model.int8.tflite` first. The int8 "
        "speed-up measured here comes from XNNPACK's integer kernels, which also run on ARM NEON; the Pi 5's A76 has "
        "int8 dot-product (sdot) instructions and should gain more than the Pi 4's A72, which has none (not measured). "
        "Keep `model.tflite` as the fallback when the INT8 drop is over the tolerance, and `model.onnx` for "
        "onnxruntime users" + (": not ONNX INT8, slower than fp32 in onnxruntime's CPU kernels here." if onnx_slower else "."),
        "- **Jetson Nano / Orin Nano** (TensorRT via `build_engine.sh`): ship `model.onnx` (opset 13 on the Nano, 17 on "
        "Orin) and build an FP16 engine; the Orin's tensor cores also run the QDQ `model.int8.onnx` as an explicit-INT8 "
        "engine. The ONNX INT8 CPU slowdown measured here "
        + (f"({', '.join(_f(r, '.2f') + 'x' for r in orr)} the fp32 latency) " if onnx_slower else "")
        + "says nothing about TensorRT; the Nano's Maxwell GPU has no fast int8 path (DEVICES.md, unverified), so FP16 "
        "should be its engine of choice (reasoned, not measured).",
        "- **Android** (LiteRT Interpreter, `ModelRunner.kt`): ship `model.int8.tflite` first (XNNPACK int8 on the CPU, "
        "as measured here on x86), `model.tflite` for the GPU delegate or when INT8 is over its tolerance.",
        "",
    ]


if __name__ == "__main__":
    sys.exit(main())
