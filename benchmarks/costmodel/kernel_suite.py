"""The model suite of the kernel-level predictor's experiment: single-kernel micro-benchmarks and whole models.

    python benchmarks/costmodel/kernel_suite.py convert --workdir DIR [--only micro|models|zoo]
    python benchmarks/costmodel/kernel_suite.py measure --workdir DIR [--rounds 3]

``convert`` builds each model (random init, seed 0) and writes its four artifacts with the project's own export
functions (``export_onnx_fp32``, ``quantize_onnx_int8`` for an x86 target, litert-torch ``convert_fp32`` and
``convert_int8_pt2e``), all in this one process (litert-torch is imported once). ``measure`` (no torch) times every
artifact on this host, 1 thread, batch 1, the artifacts interleaved over ``--rounds`` rounds; it writes
``DIR/measured.json``. ``predictor_error.py`` fits and evaluates the predictor on it.

Three groups (the "family" of a row decides the held-out split):

- ``micro``: single fused kernels (conv+bn+relu at many shapes, depthwise+bn+relu6, linear(+relu), pooling,
  residual add): what the per-kernel regressions are fitted on;
- ``models``: every built-in model (``edgeprune models``) at width multiple 1 on an 8x8 input and 0.25 / 0.5 / 1
  on a 28x28 input;
- ``zoo``: torchvision resnet18, mobilenet_v3_small and squeezenet1_1 (10 classes) on 3x64x64 inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

#: the legacy (TorchScript) exporter: 10x faster than dynamo here; onnxruntime fuses both graphs to the same kernels
ONNX_OPSET = 17
FORMATS = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx", "tflite": "model.tflite",
           "tflite-int8": "model.int8.tflite"}


# ------------------------------------------------------------------------------------------- the suite


def micro_rows() -> list[dict]:
    """Single-kernel models: name, builder spec, input shape."""
    rng = random.Random(0)
    rows = []
    for i in range(16):  # dense conv + bn + relu
        cin, cout = rng.choice([1, 3, 8, 16, 24, 32, 64]), rng.choice([8, 16, 24, 32, 48, 64, 96, 128])
        k, s, hw = rng.choice([1, 1, 3, 3, 3, 5]), rng.choice([1, 1, 2]), rng.choice([8, 14, 16, 28, 32])
        rows.append({"name": f"conv-c{cin}-o{cout}-k{k}-s{s}-hw{hw}", "kind": "conv",
                     "spec": {"cin": cin, "cout": cout, "k": k, "s": s, "groups": 1, "act": "relu"},
                     "shape": (cin, hw, hw)})
    for i in range(8):  # depthwise conv + bn + relu6
        c, s, hw = rng.choice([8, 16, 32, 48, 64, 96, 144]), rng.choice([1, 1, 2]), rng.choice([7, 8, 14, 16, 28])
        rows.append({"name": f"dw-c{c}-k3-s{s}-hw{hw}", "kind": "conv",
                     "spec": {"cin": c, "cout": c, "k": 3, "s": s, "groups": c, "act": "relu6"}, "shape": (c, hw, hw)})
    for fin, fout, act in ((64, 10, False), (784, 128, True), (256, 256, True), (512, 64, True), (1024, 256, True),
                           (2048, 10, False)):
        rows.append({"name": f"fc-{fin}-{fout}{'-relu' if act else ''}", "kind": "linear",
                     "spec": {"fin": fin, "fout": fout, "act": act}, "shape": (fin,)})
    for c, hw in ((16, 28), (64, 8)):
        rows.append({"name": f"pool-c{c}-hw{hw}", "kind": "pool", "spec": {}, "shape": (c, hw, hw)})
        rows.append({"name": f"addrelu-c{c}-hw{hw}", "kind": "add", "spec": {}, "shape": (c, hw, hw)})
    for cin, cout, k, hw in ((2, 4, 3, 28), (4, 4, 3, 28), (4, 8, 3, 28), (8, 4, 3, 28), (6, 12, 3, 14), (12, 6, 1, 28),
                             (4, 16, 1, 28), (16, 4, 1, 14)):  # small channel counts (pruned / narrow models)
        rows.append({"name": f"conv-c{cin}-o{cout}-k{k}-s1-hw{hw}", "kind": "conv",
                     "spec": {"cin": cin, "cout": cout, "k": k, "s": 1, "groups": 1, "act": "relu"},
                     "shape": (cin, hw, hw)})
    for c, hw in ((4, 28), (12, 28)):
        rows.append({"name": f"dw-c{c}-k3-s1-hw{hw}", "kind": "conv",
                     "spec": {"cin": c, "cout": c, "k": 3, "s": 1, "groups": c, "act": "relu6"}, "shape": (c, hw, hw)})
    for cin, cout, hw in ((256, 512, 4), (512, 512, 4)):  # weights larger than the L2 cache
        rows.append({"name": f"conv-c{cin}-o{cout}-k3-s1-hw{hw}", "kind": "conv",
                     "spec": {"cin": cin, "cout": cout, "k": 3, "s": 1, "groups": 1, "act": "relu"},
                     "shape": (cin, hw, hw)})
    for fin, fout in ((2048, 2048), (4096, 4096)):  # 16 and 64 MiB of fp32 weights (the LLC here is 32 MiB)
        rows.append({"name": f"fc-{fin}-{fout}-relu", "kind": "linear", "spec": {"fin": fin, "fout": fout, "act": True},
                     "shape": (fin,)})
    rows.append({"name": "gap-c64-hw14", "kind": "gap", "spec": {}, "shape": (64, 14, 14)})
    rows.append({"name": "gap-c128-hw7", "kind": "gap", "spec": {}, "shape": (128, 7, 7)})
    for r in rows:
        r["group"], r["family"] = "micro", "micro"
    return rows


WIDTH_MULTS = {"8x8": (1.0,), "28x28": (0.25, 0.5, 1.0)}
SHAPES = {"8x8": (1, 8, 8), "28x28": (1, 28, 28)}


def _scaled_options(name: str, mult: float) -> dict:
    import inspect

    from edgeprune.models import MODELS

    out = {}
    for p in inspect.signature(MODELS[name]).parameters.values():
        if p.name in ("widths", "hidden") and isinstance(p.default, tuple):
            out[p.name] = tuple(max(2, int(round(w * mult))) for w in p.default)
        elif p.name in ("hidden", "merge") and isinstance(p.default, int):
            out[p.name] = max(2, int(round(p.default * mult)))
    return out


def model_rows() -> list[dict]:
    from edgeprune.models import MODELS

    rows = []
    for name in sorted(MODELS):
        for shape, mults in WIDTH_MULTS.items():
            for m in mults:
                rows.append({"name": f"{name}-{shape}-w{m:g}", "kind": "builtin", "group": "models", "family": name,
                             "spec": {"model": name, "options": _scaled_options(name, m)}, "shape": SHAPES[shape]})
    return rows


def zoo_rows() -> list[dict]:
    return [{"name": f"{n}-64x64", "kind": "torchvision", "group": "zoo", "family": n, "spec": {"model": n},
             "shape": (3, 64, 64)} for n in ("resnet18", "mobilenet_v3_small", "squeezenet1_1")]


#: the prior the sampled micro-benchmarks are drawn from: a broad grid of layer shapes found in edge CNNs, NOT the
#: shapes of the evaluated models (they are held out), in the spirit of nn-Meter's kernel sampling
CHANNELS = (1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256)
SPATIAL = (4, 7, 8, 14, 16, 28, 32, 56, 64)
ACTS = ("relu", "relu", "relu6", "hardswish", "none")


def sampled_rows(n: int, seed: int = 1, max_macs: float = 60e6) -> list[dict]:
    """``n`` single- or two-kernel micro-benchmarks drawn at random from :data:`CHANNELS` x :data:`SPATIAL` x
    kernel sizes x strides x activations: dense convs (half), depthwise convs, conv + residual add (the fusion
    onnxruntime applies), fully-connected layers and memory-only kernels, each with at most ``max_macs`` MACs."""
    rng = random.Random(seed)
    rows, names = [], set()
    while len(rows) < n:
        u = rng.random()
        hw, s = rng.choice(SPATIAL), rng.choice((1, 1, 2))
        act = rng.choice(ACTS)
        if u < 0.5:
            cin, cout, k = rng.choice(CHANNELS), rng.choice(CHANNELS[1:]), rng.choice((1, 1, 3, 3, 3, 5, 7))
            spec, shape, kind = {"cin": cin, "cout": cout, "k": k, "s": s, "groups": 1, "act": act}, (cin, hw, hw), "conv"
            macs = cin * cout * k * k * (hw // s) ** 2
        elif u < 0.7:
            c, k = rng.choice(CHANNELS[3:] + (384, 576)), rng.choice((3, 3, 5))
            spec, shape, kind = {"cin": c, "cout": c, "k": k, "s": s, "groups": c, "act": act}, (c, hw, hw), "conv"
            macs = c * k * k * (hw // s) ** 2
        elif u < 0.8:
            c, k = rng.choice(CHANNELS[3:]), rng.choice((1, 3))
            spec, shape, kind = {"cin": c, "cout": c, "k": k, "s": 1, "groups": 1, "act": "relu"}, (c, hw, hw), "resconv"
            macs = c * c * k * k * hw * hw
        elif u < 0.9:
            fin, fout = rng.choice((16, 32, 64, 128, 256, 512, 784, 1024, 1280, 2048)), rng.choice((2, 10, 32, 64, 128, 256, 512, 1000))
            spec, shape, kind = {"fin": fin, "fout": fout, "act": act != "none"}, (fin,), "linear"
            macs = fin * fout
        else:
            c = rng.choice(CHANNELS[3:])
            kind = rng.choice(("pool", "add", "gap"))
            spec, shape, macs = {}, (c, hw, hw), 0
        if macs > max_macs:
            continue
        name = "s-" + kind + "-" + "-".join(f"{k}{v}" for k, v in spec.items()) + "-in" + "x".join(map(str, shape))
        if name in names:
            continue
        names.add(name)
        rows.append({"name": name, "kind": kind, "spec": spec, "shape": shape, "group": "micro", "family": "micro",
                     "source": "sampled"})
    return rows


def all_rows(only=None) -> list[dict]:
    groups = {"micro": micro_rows, "models": model_rows, "zoo": zoo_rows}  # noqa: F841
    return [r for g, f in groups.items() if only in (None, g) for r in f()]


def build(r: dict):
    import torch
    from torch import nn

    torch.manual_seed(0)
    s, k = r["spec"], r["kind"]
    acts = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "none": nn.Identity}
    if k == "conv":
        return nn.Sequential(nn.Conv2d(s["cin"], s["cout"], s["k"], s["s"], s["k"] // 2, groups=s["groups"], bias=False),
                             nn.BatchNorm2d(s["cout"]), acts[s["act"]]())
    if k == "resconv":
        class ResConv(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(s["cin"], s["cout"], s["k"], 1, s["k"] // 2, bias=False)
                self.bn = nn.BatchNorm2d(s["cout"])

            def forward(self, x):
                return torch.relu(self.bn(self.conv(x)) + x)
        return ResConv()
    if k == "linear":
        return nn.Sequential(nn.Linear(s["fin"], s["fout"]), *( [nn.ReLU()] if s["act"] else []))
    if k == "pool":
        return nn.MaxPool2d(2)
    if k == "gap":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if k == "add":
        class AddRelu(nn.Module):
            def forward(self, x):
                return torch.relu(x + x * 0.5)
        return AddRelu()
    if k == "builtin":
        from edgeprune.models import build_model

        return build_model(s["model"], r["shape"], 10, **s["options"])
    if k == "torchvision":
        import types

        # torchvision's CUDA-build ops cannot load next to the CPU torch; the model definitions need none of them
        # (the same trick as benchmarks/zoo/reference.py)
        sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
        import torchvision

        return getattr(torchvision.models, s["model"])(num_classes=10)
    raise ValueError(k)


# ------------------------------------------------------------------------------------------- convert


def convert(rows, workdir: Path, formats=tuple(FORMATS)) -> None:
    import numpy as np
    import torch

    from edgeprune.export.onnx_export import export_onnx_fp32, quantize_onnx_int8
    from edgeprune.export.tflite_worker import convert_fp32, convert_int8_pt2e

    for r in rows:
        out = workdir / r["name"]
        done = out / "done.json"
        if done.is_file():
            continue
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        model = build(r).eval()
        x = torch.zeros(1, *r["shape"])
        calib = np.random.default_rng(0).random((16, *r["shape"]), dtype=np.float32)
        with torch.no_grad():  # BN statistics that are not the identity (a fresh BN would fold to a no-op)
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        arts, errors = {}, {}
        for fmt in formats:
            p = out / FORMATS[fmt]
            try:
                if fmt == "onnx":
                    export_onnx_fp32(model, x, p, opset=ONNX_OPSET)
                elif fmt == "onnx-int8":
                    if "onnx" not in arts:
                        raise RuntimeError("no fp32 onnx")
                    quantize_onnx_int8(out / FORMATS["onnx"], p, calib, out, target_x86=True)
                else:
                    prog = out / "model.pt2"
                    if not prog.is_file():
                        torch.export.save(torch.export.export(model, (x,)), str(prog))
                    if fmt == "tflite":
                        convert_fp32(str(prog), x, str(p))
                    else:
                        convert_int8_pt2e(str(prog), x, calib, str(p))
                arts[fmt] = FORMATS[fmt]
            except Exception as e:  # noqa: BLE001 - recorded, the row is measured without it
                errors[fmt] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
        (out / "model.pt2").unlink(missing_ok=True)
        row = {k: v for k, v in r.items()}
        row.update({"artifacts": arts, "errors": errors, "seconds": round(time.perf_counter() - t0, 1)})
        done.write_text(json.dumps(row, indent=1))
        print(f"{r['name']}: {sorted(arts)} {errors or ''} {row['seconds']} s", flush=True)


# ------------------------------------------------------------------------------------------- measure


def _session(path: str):
    if path.endswith(".onnx"):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        i = s.get_inputs()[0]
        import numpy as np

        feed = {i.name: np.random.default_rng(0).random([d if isinstance(d, int) else 1 for d in i.shape],
                                                       dtype=np.float32)}
        return lambda: s.run(None, feed)
    from ai_edge_litert.interpreter import Interpreter
    import numpy as np

    it = Interpreter(model_path=path, num_threads=1)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    a = np.random.default_rng(0).random(d["shape"]).astype(np.float32)
    if d["dtype"] != np.float32:
        a = (a * 100).astype(d["dtype"])
    it.set_tensor(d["index"], a)
    return it.invoke


def time_runs(fn, budget_s: float = 0.12, min_runs: int = 15, max_runs: int = 400, warmup: int = 5) -> list:
    import time as _t

    for _ in range(warmup):
        fn()
    out, start = [], _t.perf_counter()
    while len(out) < max_runs and (len(out) < min_runs or _t.perf_counter() - start < budget_s):
        t0 = _t.perf_counter()
        fn()
        out.append((_t.perf_counter() - t0) * 1e6)
    return out


def measure(workdir: Path, rounds: int = 3) -> dict:
    import statistics

    rows = [json.loads(p.read_text()) for p in sorted(workdir.glob("*/done.json"))]
    load_before = os.getloadavg()
    per = {}
    t0 = time.time()
    for rnd in range(rounds):
        for r in rows:
            for fmt, fn in r["artifacts"].items():
                try:
                    runs = time_runs(_session(str(workdir / r["name"] / fn)))
                except Exception as e:  # noqa: BLE001
                    print(f"{r['name']} {fmt}: {e}", flush=True)
                    continue
                per.setdefault((r["name"], fmt), []).append({"p50": statistics.median(runs), "min": min(runs),
                                                            "p10": sorted(runs)[len(runs) // 10], "n": len(runs)})
        print(f"round {rnd + 1}/{rounds} done, {time.time() - t0:.0f} s, load {os.getloadavg()}", flush=True)
    for r in rows:
        r["measured"] = {}
        for fmt in r["artifacts"]:
            rs = per.get((r["name"], fmt))
            if rs:
                p50s = [x["p50"] for x in rs]
                r["measured"][fmt] = {"p50_us": statistics.median(p50s), "min_us": min(x["min"] for x in rs),
                                      "p10_us": statistics.median(x["p10"] for x in rs),
                                      "spread_pct": 100 * (max(p50s) / min(p50s) - 1), "rounds": len(rs),
                                      "runs": [x["n"] for x in rs]}
    res = {"rows": rows, "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "rounds": rounds,
           "seconds": round(time.time() - t0, 1), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
           "how": "in-process, 1 thread, batch 1, random input; per artifact and round: 5 warm-up runs then runs "
                  "until 0.12 s (15..400 runs); value = median over rounds of each round's p50"}
    (workdir / "measured.json").write_text(json.dumps(res, indent=1))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["convert", "measure", "list"])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--only", choices=["micro", "models", "zoo"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sample", type=int, default=0, metavar="N",
                    help="convert N micro-benchmarks sampled from the shape prior (sampled_rows) instead of the suite")
    ap.add_argument("--sample-seed", type=int, default=1)
    ap.add_argument("--formats", default=",".join(FORMATS), help="comma list of artifacts to convert")
    a = ap.parse_args(argv)
    wd = Path(a.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    if a.step == "list":
        for r in all_rows(a.only):
            print(r["name"], r["shape"])
    elif a.step == "convert":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        formats = tuple(f for f in a.formats.split(",") if f)
        bad = [f for f in formats if f not in FORMATS]
        if bad:
            ap.error(f"unknown format(s) {bad}; choose from {sorted(FORMATS)}")
        convert(sampled_rows(a.sample, a.sample_seed) if a.sample else all_rows(a.only), wd, formats)
    else:
        measure(wd, a.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
