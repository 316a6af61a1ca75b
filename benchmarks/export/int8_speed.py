#!/usr/bin/env python3
"""INT8 vs fp32 latency per runtime on the built-in models (batch 1), side by side in one run.

For each built-in image model (default: cnn, resnet, mobilenetv2) this script trains a
Fashion-MNIST model briefly (``--train-samples`` images, ``--epochs``), exports it with
``edgeprune.export.export_all`` (ONNX fp32, ONNX INT8 for onnxruntime = QDQ U8S8, TFLite fp32,
TFLite full-integer INT8) and additionally quantizes the fp32 ONNX model with the previous
scheme (QDQ S8S8, symmetric int8 activations: what TensorRT needs and what edgeprune shipped
for every target before) to show the difference.

Accuracy: the whole Fashion-MNIST test split (10k images) in each artifact's own runtime.
Latency: ``edgeprune/bench/runner.py`` in a fresh process per measurement, batch 1, for each
thread count in ``--threads``; every round runs every (model, artifact, threads) once, in a
rotated order; value = median over rounds of each process's p50; INT8/fp32 ratio = median
over rounds of the per-round (paired) ratio. The load average is recorded before and after
every round. The machine is shared with other jobs: the script does not use ``nice`` (a
niced process gets less CPU under load, which would measure the scheduler, not the kernels);
interleaving and many rounds spread the load over all artifacts alike.

A second section (``--variants``) sweeps onnxruntime's quantization options on the resnet
model in one process (interleaved rounds): QDQ vs QOperator, U8S8 vs S8S8, reduce_range,
symmetric activations, and a graph optimised offline (``SessionOptions.optimized_model_filepath``
at the portable EXTENDED level), with the node types left in onnxruntime's optimised graph.

    python benchmarks/export/int8_speed.py [--models cnn,resnet,mobilenetv2] [--threads 1,2] \
        [--rounds 5] [--runs 100] [--train-samples 10000] [--epochs 1]

Writes ``int8_speed.md`` and ``int8_speed.json`` next to this script (or to ``--out``).
"""

from __future__ import annotations

import argparse
import collections
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
RUNNER = REPO / "edgeprune" / "bench" / "runner.py"
ARTS = ("onnx", "onnx-int8", "onnx-int8-s8s8", "tflite", "tflite-int8")
FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx", "onnx-int8-s8s8": "model.int8.s8s8.onnx",
         "tflite": "model.tflite", "tflite-int8": "model.int8.tflite"}  # fmt: skip
VNNI = {"avx512_vnni", "avx_vnni", "amx_int8"}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train_and_export(name: str, ds, a: dict, args, work: Path) -> dict:
    import torch

    from edgeprune import config
    from edgeprune.export import export_all
    from edgeprune.export.onnx_export import quantize_onnx_int8
    from edgeprune.export.runtimes import OrtRunner
    from edgeprune.metrics import get_metric
    from edgeprune.models import build_model
    from edgeprune.train import seed_everything, train

    t = config.defaults()["train"]
    seed_everything(0)
    model = build_model(name, a["x_train"].shape[1:], 10)
    n = args.train_samples
    t0 = time.perf_counter()
    train(model, a["x_train"][:n], a["y_train"][:n], epochs=args.epochs, batch_size=t["batch_size"], lr=t["lr"],
          weight_decay=t["weight_decay"], seed=0)  # fmt: skip
    train_s = time.perf_counter() - t0
    model.eval()
    d = work / name
    calib = a["x_train"][:256]
    t0 = time.perf_counter()
    res = export_all(model, torch.from_numpy(a["x_test"][:1]), calib=calib, test_x=a["x_test"], test_y=a["y_test"],
                     out_dir=d, formats=["onnx", "onnx-int8", "tflite", "tflite-int8"], threads=1,
                     target_x86=True)  # fmt: skip
    export_s = time.perf_counter() - t0
    out = {"train_seconds": round(train_s, 1), "export_seconds": round(export_s, 1),
           "params": sum(p.numel() for p in model.parameters()), "artifacts": {}}  # fmt: skip
    for f, e in res.items():
        out["artifacts"][f] = {"ok": e["ok"], "error": e["error"], "metric": e["metric"], "size_bytes": e["size_bytes"],
                               "metric_drop": e["metric_drop"], "scheme": e["details"].get("int8_scheme")}  # fmt: skip
    out["torch_accuracy"] = next(iter(res.values()))["torch_metric"]
    out["runtime_choice"] = json.loads((d / "export.json").read_text())["runtime_choice"]
    # the previous scheme, for comparison: symmetric int8 activations (TensorRT's)
    scratch = Path(tempfile.mkdtemp(dir=work))
    quantize_onnx_int8(d / "model.onnx", d / FILES["onnx-int8-s8s8"], calib, scratch, runtime="tensorrt")
    acc = float(get_metric("accuracy")(OrtRunner(d / FILES["onnx-int8-s8s8"]).run(a["x_test"]), a["y_test"]))
    out["artifacts"]["onnx-int8-s8s8"] = {"ok": True, "metric": acc, "metric_drop": out["torch_accuracy"] - acc,
                                          "size_bytes": (d / FILES["onnx-int8-s8s8"]).stat().st_size}  # fmt: skip
    return out


def measure(path: Path, threads: int, runs: int, warmup: int) -> float:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run([sys.executable, str(RUNNER), str(path), "--runs", str(runs), "--warmup", str(warmup),
                        "--threads", str(threads), "--json", f.name], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)  # fmt: skip
        return json.loads(Path(f.name).read_text())["p50_ms"] * 1000.0


def latency_rounds(work: Path, models, threads, args) -> tuple[dict, list]:
    jobs = [(m, a, t) for m in models for a in ARTS for t in threads if (work / m / FILES[a]).exists()]
    lat = collections.defaultdict(list)
    loads = []
    for r in range(args.rounds):
        l0 = os.getloadavg()[0]
        k = (r * 7) % len(jobs)
        for m, a, t in jobs[k:] + jobs[:k]:
            lat[f"{m}|{a}|{t}"].append(measure(work / m / FILES[a], t, args.runs, args.warmup))
        loads.append([round(l0, 2), round(os.getloadavg()[0], 2)])
        log(f"round {r + 1}/{args.rounds} done (load {loads[-1]})")
    return dict(lat), loads


def _ratio(lat, m, a, b, t):
    ka, kb = f"{m}|{a}|{t}", f"{m}|{b}|{t}"
    if ka not in lat or kb not in lat:
        return None
    return statistics.median(x / y for x, y in zip(lat[ka], lat[kb]))


def variants(pre_dir: Path, calib: np.ndarray, rounds: int, runs: int) -> dict:
    """onnxruntime quantization options on one fp32 model, timed in one process (interleaved rounds)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp = pre_dir / "model.onnx"
    vd = pre_dir / "variants"
    vd.mkdir(exist_ok=True)
    pre = vd / "pre.onnx"
    quant_pre_process(str(fp), str(pre))
    iname = onnx.load(str(pre)).graph.input[0].name

    class R(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(calib):
                return None
            self.i += 1
            return {iname: calib[self.i - 1 : self.i]}

    paths = {"fp32": fp}
    for fmt in ("QDQ", "QOperator"):
        for act in ("U8S8", "S8S8"):
            for rr in (False, True):
                for sym in ((False, True) if act == "S8S8" else (False,)):
                    key = f"{fmt} {act}{' reduce_range' if rr else ''}{' sym-act' if sym else ''}"
                    out = vd / (key.replace(" ", "_") + ".onnx")
                    quantize_static(str(pre), str(out), R(), quant_format=getattr(QuantFormat, fmt), per_channel=True,
                                    reduce_range=rr, activation_type=QuantType.QUInt8 if act == "U8S8" else QuantType.QInt8,
                                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                                    extra_options={"ActivationSymmetric": sym})  # fmt: skip
                    paths[key] = out
    # offline optimisation, portable level (ALL adds NCHWc layouts tied to this CPU)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(vd / "qdq_u8s8_offline.onnx")
    ort.InferenceSession(str(paths["QDQ U8S8"]), so, providers=["CPUExecutionProvider"])
    paths["QDQ U8S8 optimised offline (EXTENDED)"] = vd / "qdq_u8s8_offline.onnx"

    res = {}
    sess = {}
    x = np.random.default_rng(0).standard_normal((1, *calib.shape[1:])).astype(np.float32)
    for k, p in paths.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        so.log_severity_level = 3  # the ALL-level graph is dumped only to count its node types
        so.optimized_model_filepath = str(vd / "opt.onnx")
        t0 = time.perf_counter()
        s = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        init_ms = (time.perf_counter() - t0) * 1e3
        ops = collections.Counter(n.op_type for n in onnx.load(str(vd / "opt.onnx")).graph.node)
        sess[k] = (s, {s.get_inputs()[0].name: x})
        res[k] = {"init_ms": round(init_ms, 1), "optimised_graph_ops": dict(ops.most_common()), "p50_us": []}
    for r in range(rounds):
        keys = list(sess)
        keys = keys[r % len(keys):] + keys[: r % len(keys)]
        for k in keys:
            s, feed = sess[k]
            for _ in range(10):
                s.run(None, feed)
            ts = []
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feed)
                ts.append(time.perf_counter() - t0)
            res[k]["p50_us"].append(statistics.median(ts) * 1e6)
    base = res["fp32"]["p50_us"]
    for k, v in res.items():
        v["ratio_vs_fp32"] = round(statistics.median(a / b for a, b in zip(v["p50_us"], base)), 3)
        v["p50_us"] = round(statistics.median(v["p50_us"]), 1)
    return res


def cpu_facts() -> dict:
    name, flags = platform.processor(), set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    return {"cpu": name, "cores": os.cpu_count(), "vnni": sorted(flags & VNNI),
            "avx512f": "avx512f" in flags, "avx2": "avx2" in flags}  # fmt: skip


def write_md(res: dict, path: Path) -> None:
    L = [f"# INT8 vs fp32 latency per runtime, built-in models on Fashion-MNIST, batch 1\n",
         f"- Command: `{res['command']}`", f"- Date (UTC): {res['date']}; git revision {res['git']}",
         f"- Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores; VNNI flags: "
         f"{', '.join(res['machine']['vnni']) or 'none'}; {res['platform']}",
         f"- Versions: {res['versions']}",
         f"- Load average (1 min) before/after each latency round: {res['loads']} — SHARED machine (other jobs "
         "running); no `nice` (a niced benchmark measures the scheduler under load); interleaved rotated rounds "
         "spread the load over all artifacts alike.",
         f"- Training: {res['args']['train_samples']} training images, {res['args']['epochs']} epoch(s) (brief: "
         "accuracy here is for the INT8 drop, not the models' best). Accuracy: whole test split (10000 images) in "
         "each artifact's runtime. Calibration: first 256 training images.",
         f"- Latency: edgeprune/bench/runner.py, a fresh process per measurement, {res['args']['warmup']} warmup + "
         f"{res['args']['runs']} timed runs, {res['args']['rounds']} rounds; value = median over rounds of each "
         "process's p50; ratio = median over rounds of the paired per-round ratio. All measured on this host.\n",
         "| model | threads | onnx fp32 (µs) | onnx INT8 U8S8 (µs) | ratio | old S8S8 (µs) | ratio | tflite fp32 (µs) "
         "| tflite INT8 (µs) | ratio |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for m, mr in res["models"].items():
        for t in res["args"]["threads"]:
            p = mr.get("latency_us", {}).get(str(t), {})
            r = mr.get("ratios", {}).get(str(t), {})

            def c(a):
                return f"{p[a]:.0f}" if a in p else "-"

            def q(a):
                return f"{r[a]:.2f}x" if r.get(a) is not None else "-"

            L.append(f"| {m} | {t} | {c('onnx')} | {c('onnx-int8')} | {q('onnx-int8')} | {c('onnx-int8-s8s8')} | "
                     f"{q('onnx-int8-s8s8')} | {c('tflite')} | {c('tflite-int8')} | {q('tflite-int8')} |")
    L += ["", "Accuracy (%) on the whole test split, and the INT8 drop vs the artifact's fp32 runtime:\n",
          "| model | torch | onnx | onnx INT8 U8S8 | old S8S8 | tflite | tflite INT8 | export's own check: INT8/fp32 "
          "onnxruntime, tflite (1 thread, in-process) | export's choice (onnxruntime / tflite) |",
          "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for m, mr in res["models"].items():
        a = mr["artifacts"]

        def acc(f):
            return f"{a[f]['metric']:.2f}" if a.get(f, {}).get("metric") is not None else "failed"

        ch = mr["runtime_choice"]
        own = ", ".join(f"{(ch.get(k) or {}).get('speed', {}).get('int8_over_fp32', '-')}x" for k in ("onnxruntime", "tflite"))
        L.append(f"| {m} | {mr['torch_accuracy']:.2f} | {acc('onnx')} | {acc('onnx-int8')} | {acc('onnx-int8-s8s8')} | "
                 f"{acc('tflite')} | {acc('tflite-int8')} | {own} | {ch.get('onnxruntime', {}).get('prefer')} / "
                 f"{ch.get('tflite', {}).get('prefer')} |")
    L += ["", res.get("verdict", ""), ""]
    if res.get("variants"):
        L += [f"## onnxruntime quantization options ({res['variants_model']}, 1 thread, one process, interleaved)\n",
              "| variant | p50 (µs) | ratio vs fp32 | session init (ms) | node types in onnxruntime's optimised graph |",
              "|---|---|---|---|---|"]  # fmt: skip
        for k, v in res["variants"].items():
            ops = ", ".join(f"{o} {n}" for o, n in v["optimised_graph_ops"].items())
            L.append(f"| {k} | {v['p50_us']:.0f} | {v['ratio_vs_fp32']:.2f}x | {v['init_ms']:.0f} | {ops} |")
    path.write_text("\n".join(L) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="cnn,resnet,mobilenetv2")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--train-samples", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--variant-rounds", type=int, default=9)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--render", metavar="JSON", help="only rewrite the .md next to JSON from its results")
    args = ap.parse_args()
    if args.render:
        res = json.loads(Path(args.render).read_text())
        write_md(res, Path(args.render).with_suffix(".md"))
        return
    from importlib import metadata

    from edgeprune.data import load_dataset

    models = args.models.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    ds = load_dataset("fashion-mnist", data_dir=args.data_dir)
    a = {"x_train": ds.normalize(ds.x_train), "y_train": ds.y_train, "x_test": ds.normalize(ds.x_test),
         "y_test": ds.y_test}  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="int8speed-"))
    argv = [("DIR" if prev in ("--out", "--data-dir") else x) for prev, x in zip([""] + sys.argv[1:], sys.argv[1:])]
    res = {"command": "python benchmarks/export/int8_speed.py " + " ".join(shlex.quote(x) for x in argv),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                 text=True).stdout.strip(),
           "machine": cpu_facts(), "platform": platform.platform(),
           "versions": ", ".join(f"{p} {metadata.version(p)}" for p in ("torch", "onnxruntime", "ai-edge-litert")),
           "args": dict(vars(args), threads=threads, models=models), "models": {}}  # fmt: skip
    for m in models:
        log(f"{m}: train + export")
        res["models"][m] = train_and_export(m, ds, a, args, work)
    if "resnet" in models:
        log("variants sweep (resnet)")
        res["variants_model"] = "resnet"
        res["variants"] = variants(work / "resnet", a["x_train"][:64], args.variant_rounds, args.runs)
    log("latency rounds")
    lat, res["loads"] = latency_rounds(work, models, threads, args)
    for m in models:
        mr = res["models"][m]
        mr["latency_us"], mr["ratios"], mr["latency_rounds_us"] = {}, {}, {}
        for t in threads:
            mr["latency_us"][str(t)] = {a_: round(statistics.median(lat[f"{m}|{a_}|{t}"]), 1) for a_ in ARTS
                                        if f"{m}|{a_}|{t}" in lat}  # fmt: skip
            mr["latency_rounds_us"][str(t)] = {a_: [round(v, 1) for v in lat[f"{m}|{a_}|{t}"]] for a_ in ARTS
                                               if f"{m}|{a_}|{t}" in lat}  # fmt: skip
            mr["ratios"][str(t)] = {"onnx-int8": _ratio(lat, m, "onnx-int8", "onnx", t),
                                    "onnx-int8-s8s8": _ratio(lat, m, "onnx-int8-s8s8", "onnx", t),
                                    "tflite-int8": _ratio(lat, m, "tflite-int8", "tflite", t)}  # fmt: skip
    out = Path(args.out)
    (out / "int8_speed.json").write_text(json.dumps(res, indent=1))
    write_md(res, out / "int8_speed.md")
    log(f"wrote {out / 'int8_speed.md'}")


if __name__ == "__main__":
    main()
