"""How well does the roofline cost model predict latency on this host?

Exports a set of varied small models (MLPs and CNNs of several widths on 8x8 and 28x28 inputs, residual nets,
depthwise nets) to ONNX (and TFLite fp32 with --tflite), measures each on this host with measure_host (fresh
processes, 1 thread, median of repeats), fits the cost-model factors on the "fit" models and reports the
prediction error on the held-out ones. Writes results.md / results.json next to this script and, with
--write-calibration, the fitted factors (fit set only) into edgeprune/bench/calibration.json.

    python benchmarks/costmodel/host_error.py --tflite --write-calibration
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from edgeprune.bench import costmodel, microbench  # noqa: E402
from edgeprune.targets import load_target  # noqa: E402
from edgeprune.bench.host import measure_host  # noqa: E402


class MLP(nn.Module):
    def __init__(self, d_in, hidden, n_out=10):
        super().__init__()
        dims = [d_in] + list(hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(dims[-1], n_out)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.out(x)


class CNN8(nn.Module):
    """8x8 digits: two 3x3 convs, 2x2 pool, linear head."""

    def __init__(self, w1, w2):
        super().__init__()
        self.c1 = nn.Conv2d(1, w1, 3, padding=1)
        self.c2 = nn.Conv2d(w1, w2, 3, padding=1)
        self.fc = nn.Linear(w2 * 16, 10)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.fc(x.flatten(1))


class CNN28(nn.Module):
    """28x28: conv-pool-conv-pool-conv, global average pool, linear."""

    def __init__(self, w1, w2):
        super().__init__()
        self.c1 = nn.Conv2d(1, w1, 3, padding=1)
        self.c2 = nn.Conv2d(w1, w2, 3, padding=1)
        self.c3 = nn.Conv2d(w2, 2 * w2, 3, padding=1)
        self.fc = nn.Linear(2 * w2, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        x = F.relu(self.c3(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.sc = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.sc is None else self.sc(x)))


class ResNet28(nn.Module):
    """ResNet-style: stem, one basic block per stage at w, 2w (stride 2), 4w (stride 2)."""

    def __init__(self, w):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.s1, self.s2, self.s3 = Block(w, w, 1), Block(w, 2 * w, 2), Block(2 * w, 4 * w, 2)
        self.fc = nn.Linear(4 * w, 10)

    def forward(self, x):
        x = self.s3(self.s2(self.s1(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class DWNet28(nn.Module):
    """MobileNet-style: stem, depthwise 3x3 + pointwise 1x1 blocks."""

    def __init__(self, w):
        super().__init__()
        cfg = [(w, 2 * w, 2), (2 * w, 2 * w, 1), (2 * w, 4 * w, 2), (4 * w, 4 * w, 1)]
        layers = [nn.Conv2d(1, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU6()]
        for cin, cout, s in cfg:
            layers += [nn.Conv2d(cin, cin, 3, s, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(),
                       nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(4 * w, 10)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


# name, constructor, input shape, split ("fit" | "held-out")
MODELS = [
    ("mlp8-32", lambda: MLP(64, [32]), (1, 1, 8, 8), "fit"),
    ("mlp8-128x64", lambda: MLP(64, [128, 64]), (1, 1, 8, 8), "held-out"),
    ("mlp8-512x512", lambda: MLP(64, [512, 512]), (1, 1, 8, 8), "fit"),
    ("mlp28-128", lambda: MLP(784, [128]), (1, 1, 28, 28), "held-out"),
    ("mlp28-512x256", lambda: MLP(784, [512, 256]), (1, 1, 28, 28), "fit"),
    ("mlp28-1024x1024", lambda: MLP(784, [1024, 1024]), (1, 1, 28, 28), "held-out"),
    ("cnn8-8x16", lambda: CNN8(8, 16), (1, 1, 8, 8), "fit"),
    ("cnn8-16x32", lambda: CNN8(16, 32), (1, 1, 8, 8), "held-out"),
    ("cnn8-32x64", lambda: CNN8(32, 64), (1, 1, 8, 8), "fit"),
    ("cnn8-64x128", lambda: CNN8(64, 128), (1, 1, 8, 8), "held-out"),
    ("cnn28-8x16", lambda: CNN28(8, 16), (1, 1, 28, 28), "fit"),
    ("cnn28-16x32", lambda: CNN28(16, 32), (1, 1, 28, 28), "held-out"),
    ("cnn28-13x27", lambda: CNN28(13, 27), (1, 1, 28, 28), "held-out"),
    ("cnn28-32x64", lambda: CNN28(32, 64), (1, 1, 28, 28), "fit"),
    ("cnn28-48x96", lambda: CNN28(48, 96), (1, 1, 28, 28), "held-out"),
    ("cnn28-64x128", lambda: CNN28(64, 128), (1, 1, 28, 28), "fit"),
    ("resnet28-w8", lambda: ResNet28(8), (1, 1, 28, 28), "held-out"),
    ("resnet28-w16", lambda: ResNet28(16), (1, 1, 28, 28), "fit"),
    ("resnet28-w32", lambda: ResNet28(32), (1, 1, 28, 28), "held-out"),
    ("resnet28-w48", lambda: ResNet28(48), (1, 1, 28, 28), "fit"),
    ("dwnet28-w16", lambda: DWNet28(16), (1, 1, 28, 28), "fit"),
    ("dwnet28-w32", lambda: DWNet28(32), (1, 1, 28, 28), "held-out"),
    ("dwnet28-w64", lambda: DWNet28(64), (1, 1, 28, 28), "fit"),
]


def _init(model):
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial BN so folding is exercised
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def export_onnx(model, shape, path):
    x = torch.randn(*shape)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False)


def export_tflite(model, shape, path):
    import litert_torch

    x = torch.randn(*shape)
    with contextlib.redirect_stdout(io.StringIO()):
        litert_torch.convert(model, (x,)).export(str(path))


def _command(argv):
    """The command line as run, with machine-specific paths (--workdir) elided."""
    args = list(argv if argv is not None else sys.argv[1:])
    if "--workdir" in args:
        i = args.index("--workdir")
        args[i:i + 2] = ["--workdir", "DIR"]
    return " ".join(["python benchmarks/costmodel/host_error.py"] + args)


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tflite", action="store_true", help="also convert to TFLite fp32 and calibrate 'tflite-fp32'")
    ap.add_argument("--write-calibration", action="store_true",
                    help="write the factors fitted on the fit set into edgeprune/bench/calibration.json")
    ap.add_argument("--only", nargs="*", help="model names (default: all)")
    ap.add_argument("--workdir", help="keep exported models here (default: a temp dir)")
    ap.add_argument("--refit", action="store_true",
                    help="reuse the measurements in results.json (re-export and re-fit only)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    old = {}
    if a.refit:
        prev = json.loads((HERE / "results.json").read_text())
        old = {r["name"]: r for r in prev["rows"]}
        if a.tflite and not all("tflite" in r["measured"] for r in old.values()):
            ap.error("results.json has no TFLite measurements; run without --refit")

    models = [m for m in MODELS if not a.only or m[0] in a.only]
    runtimes = ["onnxruntime"] + (["tflite"] if a.tflite else [])
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="edgeprune-costmodel-") as td:
        wd = Path(a.workdir or td)
        wd.mkdir(parents=True, exist_ok=True)
        rows = []
        for name, ctor, shape, split in models:
            model = _init(ctor())
            onnx_path = wd / f"{name}.onnx"
            export_onnx(model, shape, onnx_path)
            gc = costmodel.analyze(onnx_path, "fp32")
            row = {"name": name, "split": split, "input": list(shape), "macs": gc.macs, "n_ops": len(gc.ops),
                   "weight_bytes": gc.weight_bytes, "activation_peak_bytes": gc.activation_peak_bytes,
                   "onnx": str(onnx_path), "measured": {}}
            arts = {"onnxruntime": onnx_path}
            if a.refit:
                row["measured"] = {rt: {k: v for k, v in m.items() if k not in ("predicted_ms", "err_pct")}
                                   for rt, m in old[name]["measured"].items() if rt in runtimes}
                arts = {}
            elif a.tflite:
                tfl = wd / f"{name}.tflite"
                export_tflite(model, shape, tfl)
                arts["tflite"] = tfl
            for rt, path in arts.items():
                m = measure_host(path, threads=1, runs=a.runs, warmup=a.warmup, repeats=a.repeats)
                row["measured"][rt] = {k: m[k] for k in ("p50_ms", "p90_ms", "p50_ms_per_repeat", "p50_spread_pct",
                                                          "peak_memory_mb", "runtime_footprint_mb",
                                                          "model_footprint_mb", "runtime_version")}
            print(f"{name:18s} {gc.macs/1e6:8.2f} MMAC " + " ".join(
                f"{rt} {row['measured'][rt]['p50_ms']*1e3:8.1f} us" for rt in row["measured"]), flush=True)
            rows.append(row)

        if a.refit:
            machine, date = prev["machine"], prev["date"]
        else:
            machine, date = measure_host(onnx_path, runs=1, warmup=0, repeats=1)["machine"], dt.date.today().isoformat()
        results = {"date": date, "machine": machine, "cpu": cpu_model(),
                   "command": prev["command"] if a.refit else _command(argv),
                   "runs": a.runs, "warmup": a.warmup, "repeats": a.repeats, "rows": rows, "fits": {}}
        # the same micro-benchmarks calibrate_remote runs on a device: measured host peaks for the
        # "@measured" factor set (used for targets whose peaks were measured)
        bench = microbench.build_microbench(wd / "microbench")
        if a.refit and "microbench" in prev:
            mb = prev["microbench"]
        else:
            mb = {k: {"p50_ms": measure_host(v["path"], runs=10, warmup=3, repeats=a.repeats)["p50_ms"]}
                  for k, v in bench.items()}
        derived = microbench.derive(bench, mb)
        host_measured = microbench.measured_profile(load_target("host"), derived, where="host", threads=1,
                                                    runtime="onnxruntime", machine=None)
        (HERE / "host-measured.toml").write_text(microbench.target_to_toml(host_measured))
        out = costmodel.CALIBRATION_PATH if a.write_calibration else None
        cal_m = {"factors": {}}
        for rt in runtimes:
            fit = [(r["onnx"], r["measured"][rt]["p50_ms"], r["measured"][rt]["model_footprint_mb"])
                   for r in rows if r["split"] == "fit"]
            cal_m = costmodel.calibrate(
                fit, runtime=rt, dtype="fp32", out=out, target=host_measured,
                machine={"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()},
                note=f"fitted by benchmarks/costmodel/host_error.py on {len(fit)} models against measured peaks")
            errs_m = []
            for r in rows:
                if r["split"] == "held-out":
                    pm = costmodel.predict(r["onnx"], host_measured, dtype="fp32", runtime=rt, calibration=cal_m)
                    errs_m.append(abs(pm["latency_ms"] / r["measured"][rt]["p50_ms"] - 1) * 100)
            results.setdefault("fits_measured", {})[rt] = dict(
                cal_m["factors"][f"{rt}-fp32@measured"], median_abs_pct_err_held_out=statistics.median(errs_m))
        results["microbench"] = mb
        results["microbench_derived"] = derived
        for rt in runtimes:
            fit = [(r["onnx"], r["measured"][rt]["p50_ms"], r["measured"][rt]["model_footprint_mb"])
                   for r in rows if r["split"] == "fit"]
            cal = costmodel.calibrate(
                fit, runtime=rt, dtype="fp32", out=out,
                machine={"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()},
                note=f"fitted by benchmarks/costmodel/host_error.py on {len(fit)} models")
            fac = cal["factors"][f"{rt}-fp32"]
            results["fits"][rt] = fac
            errs = {"fit": [], "held-out": []}
            for r in rows:
                p = costmodel.predict(r["onnx"], "host", dtype="fp32", runtime=rt, calibration=cal)
                meas = r["measured"][rt]["p50_ms"]
                err = (p["latency_ms"] - meas) / meas * 100
                r["measured"][rt]["predicted_ms"] = p["latency_ms"]
                r["measured"][rt]["err_pct"] = err
                r["predicted_peak_memory_mb"] = p["peak_memory_mb"]
                r["measured"][rt]["predicted_footprint_mb"] = p["model_footprint_mb"]
                errs[r["split"]].append(abs(err))
            results["fits"][rt]["median_abs_pct_err_held_out"] = statistics.median(errs["held-out"]) if errs[
                "held-out"] else None
            results["fits"][rt]["median_abs_pct_err_fit"] = statistics.median(errs["fit"]) if errs["fit"] else None
            results["fits"][rt]["max_abs_pct_err_held_out"] = max(errs["held-out"]) if errs["held-out"] else None
        # what the calibrated model says about the targets (predicted, never measured here)
        results["target_predictions"] = {}
        for r in rows:
            if r["name"] not in ("cnn8-16x32", "cnn28-16x32", "resnet28-w48"):
                continue
            for tn in ("rpi4", "rpi5", "jetson-nano", "jetson-orin-nano", "android-mid", "android-flagship"):
                for dtype in ("fp32", "int8"):
                    pr = costmodel.predict(r["onnx"], tn, dtype=dtype)
                    results["target_predictions"].setdefault(r["name"], {}).setdefault(tn, {})[dtype] = {
                        "latency_ms": pr["latency_ms"], "calibration_key": pr["calibration_key"],
                        "model_footprint_mb": pr["model_footprint_mb"]}
    results["wall_s"] = prev["wall_s"] if a.refit else time.time() - t_start
    if a.refit:
        results["refit"] = dt.date.today().isoformat()
    for r in results["rows"]:
        r.pop("onnx")
    (HERE / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    write_md(results, runtimes)
    for rt in runtimes:
        f = results["fits"][rt]
        print(f"{rt}: held-out median |err| {f['median_abs_pct_err_held_out']:.1f}% "
              f"(max {f['max_abs_pct_err_held_out']:.1f}%), fit {f['median_abs_pct_err_fit']:.1f}%")


def write_md(res, runtimes):
    L = ["# Cost model: prediction error on this host", ""]
    L.append(f"- Date: {res['date']}; machine: {res['cpu']}, {res['machine']['cores']} cores, "
             f"{res['machine']['platform']}, python {res['machine']['python']} (shared, noisy 2-vCPU VM)")
    L.append(f"- Command: `{res['command']}` (wall {res['wall_s']/60:.1f} min)"
             + (f"; factors re-fitted from the stored measurements with `--refit` on {res['refit']}"
                if res.get("refit") else ""))
    L.append(f"- Measurement: `measure_host`, 1 thread, batch 1, {res['repeats']} fresh processes x "
             f"{res['runs']} runs ({res['warmup']} warmup); the value is the median over processes of each "
             "process's p50. 'spread' = max/min - 1 of the per-process p50s.")
    L.append("- Model: roofline-v1 (`edgeprune/bench/costmodel.py`), `host` profile peaks (derived: 3.7 GHz x "
             "AVX-512 width; the clock is inferred, see `edgeprune/targets/host.toml`), output channels padded to "
             "the profile's width_multiple (16), factors fitted by least squares on relative error on the "
             "**fit** models only; **held-out** models were not used in the fit.")
    L.append("")
    for rt in runtimes:
        f = res["fits"][rt]
        L.append(f"## {rt} fp32")
        L.append("")
        L.append(f"**Held-out median absolute error: {f['median_abs_pct_err_held_out']:.1f}%** "
                 f"(max {f['max_abs_pct_err_held_out']:.1f}%; fit set {f['median_abs_pct_err_fit']:.1f}%). "
                 f"Fitted: eff_compute {f['eff_compute']:.3f}, eff_mem {f['eff_mem']:.3f}, per-op overhead "
                 f"{f['per_op_overhead_us']:.2f} us, per-run overhead {f['per_run_overhead_us']:.2f} us.")
        L.append("")
        L.append("| model | split | MMACs | ops | measured p50 (us) | spread | predicted (us) | error |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|")
        for r in res["rows"]:
            m = r["measured"][rt]
            L.append(f"| {r['name']} | {r['split']} | {r['macs']/1e6:.2f} | {r['n_ops']} | {m['p50_ms']*1e3:.1f} | "
                     f"{m['p50_spread_pct']:.0f}% | {m['predicted_ms']*1e3:.1f} | {m['err_pct']:+.1f}% |")
        L.append("")
    L.append("## Factors against measured peaks (`@measured`, for targets calibrated with `calibrate_remote`)")
    L.append("")
    d = res["microbench_derived"]
    L.append(f"Host micro-benchmarks (`edgeprune.bench.microbench`, onnxruntime, 1 thread): "
             f"{d['peak_fp32_gflops']:.1f} GFLOP/s on the MatMul chain, {d['mem_bandwidth_gbs']:.1f} GB/s streaming "
             "(profile written to `benchmarks/costmodel/host-measured.toml`).")
    L.append("")
    L.append("| runtime | eff_compute | eff_mem | per-op us | per-run us | held-out median abs error |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for rt in runtimes:
        f = res["fits_measured"][rt]
        L.append(f"| {rt} | {f['eff_compute']:.3f} | {f['eff_mem']:.3f} | {f['per_op_overhead_us']:.2f} | "
                 f"{f['per_run_overhead_us']:.2f} | {f['median_abs_pct_err_held_out']:.1f}% |")
    L.append("")
    L.append("## Memory")
    L.append("")
    L.append("Tensors = weights + liveness peak of activations (`peak_memory_mb` of `predict`, a lower bound). "
             "Measured model footprint = VmHWM at the end minus VmHWM after importing the runtime (adds the "
             "session/arena baseline and packed weight copies). Predicted footprint = `model_footprint_mb` of "
             "`predict`: base + k_w x weights + k_a x activations, fitted on the fit models "
             + ", ".join(f"({rt}: base {res['fits'][rt].get('mem_base_mb', 0):.1f} MiB, k_w "
                         f"{res['fits'][rt].get('mem_weight_factor', 0):.2f}, k_a {res['fits'][rt].get('mem_act_factor', 0):.2f})"
                         for rt in runtimes) + ".")
    L.append("")
    L.append("| model | split | weights (KiB) | activation peak (KiB) | tensors (MiB) | "
             + " | ".join(f"{rt} measured / predicted footprint (MiB)" for rt in runtimes) + " |")
    L.append("|---|---|---:|---:|---:|" + "---:|" * len(runtimes))
    for r in res["rows"]:
        cells = " | ".join(f"{r['measured'][rt]['model_footprint_mb']:.1f} / "
                           f"{r['measured'][rt]['predicted_footprint_mb']:.1f}" for rt in runtimes)
        L.append(f"| {r['name']} | {r['split']} | {r['weight_bytes']/1024:.1f} | {r['activation_peak_bytes']/1024:.1f} | "
                 f"{r['predicted_peak_memory_mb']:.2f} | {cells} |")
    L.append("")
    L.append("## Predicted on the targets (NOT measured: no device was available)")
    L.append("")
    L.append("`predict(onnx, target, dtype=...)` with the shipped calibration, each profile's thread count and "
             "runtime (fp32 / int8 latency in ms). INT8 is costed from the fp32 graph (1-byte tensors, int8 peak) "
             "with the fp32 factors: there is no INT8 calibration yet, and shared/TOOLCHAIN.md measured QDQ INT8 in "
             "onnxruntime 2-3x SLOWER than fp32 on x86, so INT8 figures are optimistic. The host fits give "
             "eff_compute ~0.9-1.0 of the derived peak (AVX-512 kernels); ARM kernels at 4 threads on ~1 ms models "
             "usually reach much less, so expect devices to be slower than these numbers - measure them.")
    L.append("")
    tns = ("rpi4", "rpi5", "jetson-nano", "jetson-orin-nano", "android-mid", "android-flagship")
    L.append("| model | MMACs | " + " | ".join(tns) + " |")
    L.append("|---|---:|" + "---:|" * len(tns))
    macs = {r["name"]: r["macs"] for r in res["rows"]}
    for name, per in res.get("target_predictions", {}).items():
        L.append(f"| {name} | {macs[name]/1e6:.2f} | " + " | ".join(
            f"{per[tn]['fp32']['latency_ms']:.3f} / {per[tn]['int8']['latency_ms']:.3f}" for tn in tns) + " |")
    L.append("")
    L.append("## What this does and does not show")
    L.append("")
    L.append("- The error is the error ON THIS HOST, where the factors were fitted. On a target the same "
             "efficiency factors are applied to the profile's peak compute and bandwidth, and the overheads are "
             "scaled by host clock / target clock: that transfer is an assumption (different cores, caches, "
             "thread counts and kernels), so target numbers are labelled `predicted` and have no measured error "
             "bound until a device is measured (`edgeprune.bench.remote`).")
    L.append("")
    (HERE / "results.md").write_text("\n".join(L))


if __name__ == "__main__":
    main()
