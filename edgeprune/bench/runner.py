#!/usr/bin/env python3
"""Standalone latency/memory benchmark for one ONNX or TFLite model, run on the device itself.

This file is copied to a Raspberry Pi / Jetson / any Linux box and run with that machine's python3. It needs
numpy and ONE runtime (onnxruntime for .onnx; ai_edge_litert, tflite_runtime or tensorflow for .tflite) and
imports nothing from edgeprune and no torch. Run it in a fresh process per measurement: the memory figures
are process-wide.

    python3 runner.py model.tflite --runs 50 --warmup 10 --threads 1 --json out.json

Reported fields (names follow LiteRT benchmark_model / onnxruntime_perf_test):
  runtime_footprint_mb  peak RSS (VmHWM) after importing numpy + the runtime, before loading the model
  init_ms               model load + session/interpreter creation (+ allocate_tensors)
  first_inference_ms    the first run
  warmup_avg_ms         mean of the warmup runs after the first
  avg_ms std_ms min_ms max_ms p50_ms p90_ms p99_ms   over the timed runs
  peak_memory_mb        process peak RSS (VmHWM) at the end; getrusage fallback
  model_footprint_mb    peak_memory_mb - runtime_footprint_mb
Exit codes: 0 ok, 3 runtime missing, 4 model cannot be loaded/run, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

RUNNER_VERSION = 1
EXIT_NO_RUNTIME = 3
EXIT_BAD_MODEL = 4


def _status_mb(field: str):
    """VmHWM / VmRSS from /proc/self/status in MB (None where /proc is absent)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    v = _status_mb("VmHWM")
    if v is not None:
        return v
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


def machine_info() -> dict:
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":")[0].strip().lower()
                if key in ("model name", "hardware", "cpu model", "model") and ":" in line:
                    cpu = line.split(":", 1)[1].strip()
                    if key == "model name":
                        break
    except OSError:
        pass
    board = None
    for p in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            with open(p, "rb") as f:
                board = f.read().rstrip(b"\0").decode(errors="replace").strip()
                break
        except OSError:
            pass
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "node": platform.node(),
        "cpu": cpu or platform.processor() or None,
        "board": board,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }


def _fail(code: int, msg: str):
    sys.stderr.write(f"runner: error: {msg}\n")
    sys.exit(code)


def _random_input(np, rng, shape, dtype):
    dims = []
    for d in shape:  # symbolic / unknown (None, "batch", -1) dimensions -> 1
        try:
            d = int(d)
        except (TypeError, ValueError):
            d = 1
        dims.append(d if d > 0 else 1)
    shape = dims
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        lo, hi = max(info.min, -128), min(info.max, 127)
        return rng.integers(lo, hi + 1, size=shape).astype(dt)
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dt)
    _fail(EXIT_BAD_MODEL, f"input dtype {dt} is not supported by the runner; give the model a numeric input")


_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(bool)": "bool",
}


class OnnxModel:
    def __init__(self, path, threads):
        try:
            import onnxruntime as ort
        except ImportError:
            _fail(EXIT_NO_RUNTIME, "onnxruntime is not installed for this python; run `python3 -m pip install onnxruntime`")
        self.ort = ort
        self.runtime = "onnxruntime"
        self.version = ort.__version__
        self.path, self.threads = path, threads

    def load(self):
        ort = self.ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.sess = ort.InferenceSession(self.path, sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - report any load failure as one line
            _fail(EXIT_BAD_MODEL, f"onnxruntime cannot load {self.path}: {str(e).splitlines()[0]}")
        self.inputs = [(i.name, i.shape, _ORT_TYPES.get(i.type, i.type)) for i in self.sess.get_inputs()]
        self.outputs = [(o.name, o.shape, _ORT_TYPES.get(o.type, o.type)) for o in self.sess.get_outputs()]
        self.provider = self.sess.get_providers()[0]

    def feed(self, arrays):
        self.feeds = {name: a for (name, _, _), a in zip(self.inputs, arrays)}

    def run(self):
        self.sess.run(None, self.feeds)


class TfliteModel:
    def __init__(self, path, threads):
        self.path, self.threads = path, threads
        errors = []
        for modname in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite"):
            try:
                if modname == "tensorflow.lite":
                    import tensorflow as tf

                    self.Interpreter = tf.lite.Interpreter
                    self.runtime, self.version = "tensorflow.lite", tf.__version__
                else:
                    mod = __import__(modname, fromlist=["Interpreter"])
                    self.Interpreter = mod.Interpreter
                    top = modname.split(".")[0]
                    self.runtime = top
                    self.version = _dist_version(top)
                break
            except ImportError as e:
                errors.append(f"{modname}: {e}")
        else:
            _fail(EXIT_NO_RUNTIME, "no TFLite interpreter for this python (tried ai_edge_litert, tflite_runtime, "
                                   "tensorflow.lite); run `python3 -m pip install ai-edge-litert`")

    def load(self):
        try:
            self.it = self.Interpreter(model_path=self.path, num_threads=self.threads)
            self.it.allocate_tensors()
        except Exception as e:  # noqa: BLE001
            _fail(EXIT_BAD_MODEL, f"{self.runtime} cannot load {self.path}: {str(e).splitlines()[0]}")
        det = self.it.get_input_details()
        self.inputs = [(d["name"], list(d["shape"]), d["dtype"].__name__ if hasattr(d["dtype"], "__name__")
                        else str(d["dtype"])) for d in det]
        self.index = [d["index"] for d in det]
        self.outputs = [(d["name"], [int(x) for x in d["shape"]], d["dtype"].__name__ if hasattr(d["dtype"], "__name__")
                         else str(d["dtype"])) for d in self.it.get_output_details()]
        self.provider = "XNNPACK (default delegate)"

    def feed(self, arrays):
        for idx, a in zip(self.index, arrays):
            self.it.set_tensor(idx, a)

    def run(self):
        self.it.invoke()


def _dist_version(name):
    try:
        from importlib import metadata

        for dist in {"ai_edge_litert": ("ai-edge-litert",), "tflite_runtime": ("tflite-runtime", "tflite_runtime")}.get(
            name, (name,)
        ):
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
    except ImportError:
        pass
    mod = sys.modules.get(name)
    return getattr(mod, "__version__", None)


def _stats(np, xs):
    a = np.asarray(xs, dtype=np.float64)
    return {
        "avg_ms": float(a.mean()),
        "std_ms": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "min_ms": float(a.min()),
        "max_ms": float(a.max()),
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
    }


def benchmark(path: str, *, runs: int = 50, warmup: int = 10, threads: int = 1, seed: int = 0) -> dict:
    t_start = time.perf_counter()
    rss_start = _status_mb("VmRSS")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".onnx", ".tflite"):
        _fail(2, f"model {path} must end in .onnx or .tflite")
    if not os.path.isfile(path):
        _fail(EXIT_BAD_MODEL, f"model file {path} not found")
    try:
        import numpy as np
    except ImportError:
        _fail(EXIT_NO_RUNTIME, "numpy is not installed for this python; run `python3 -m pip install numpy`")
    t0 = time.perf_counter()
    model = OnnxModel(path, threads) if ext == ".onnx" else TfliteModel(path, threads)
    import_ms = (time.perf_counter() - t0) * 1e3
    footprint = peak_rss_mb()

    t0 = time.perf_counter()
    model.load()
    init_ms = (time.perf_counter() - t0) * 1e3
    rss_after_init = _status_mb("VmRSS")

    rng = np.random.default_rng(seed)
    arrays = [_random_input(np, rng, shape, dtype) for _, shape, dtype in model.inputs]
    model.feed(arrays)

    pc = time.perf_counter
    t0 = pc()
    try:
        model.run()
    except Exception as e:  # noqa: BLE001
        _fail(EXIT_BAD_MODEL, f"{model.runtime} failed to run {path}: {str(e).splitlines()[0]}")
    first_ms = (pc() - t0) * 1e3
    w = []
    for _ in range(max(warmup - 1, 0)):
        t0 = pc()
        model.run()
        w.append((pc() - t0) * 1e3)
    times = []
    for _ in range(runs):
        t0 = pc()
        model.run()
        times.append((pc() - t0) * 1e3)
    peak = peak_rss_mb()
    out = {
        "runner_version": RUNNER_VERSION,
        "model": os.path.basename(path),
        "model_size_mb": os.path.getsize(path) / 2**20,
        "format": ext[1:],
        "runtime": model.runtime,
        "runtime_version": model.version,
        "provider": model.provider,
        "threads": threads,
        "inputs": [{"name": n, "shape": [int(x) for x in a.shape], "dtype": str(a.dtype)}
                   for (n, _, _), a in zip(model.inputs, arrays)],
        # every output is computed by each timed run (a multi-output model is timed whole)
        "outputs": [{"name": n, "shape": [x if isinstance(x, int) else str(x) for x in shape], "dtype": str(dt)}
                    for n, shape, dt in getattr(model, "outputs", [])],
        "runs": runs,
        "warmup": warmup,
        "import_ms": import_ms,
        "init_ms": init_ms,
        "first_inference_ms": first_ms,
        "warmup_avg_ms": float(np.mean(w)) if w else first_ms,
    }
    out.update(_stats(np, times) if times else {})
    out.update({
        "rss_start_mb": rss_start,
        "rss_after_init_mb": rss_after_init,
        "runtime_footprint_mb": footprint,
        "peak_memory_mb": peak,
        "model_footprint_mb": peak - footprint,
        "memory_source": "VmHWM" if _status_mb("VmHWM") is not None else "getrusage",
        "runs_ms": times,
        "wall_s": time.perf_counter() - t_start,
        "machine": machine_info(),
    })
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="model.onnx or model.tflite")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", dest="json_path", help="write the result here (default: stdout)")
    a = ap.parse_args(argv)
    if a.runs < 1 or a.warmup < 0 or a.threads < 1:
        _fail(2, "--runs and --threads must be >= 1 and --warmup >= 0")
    res = benchmark(a.model, runs=a.runs, warmup=a.warmup, threads=a.threads, seed=a.seed)
    text = json.dumps(res, indent=1)
    if a.json_path:
        with open(a.json_path, "w") as f:
            f.write(text)
        sys.stdout.write(
            f"{res['model']} {res['runtime']} {res['runtime_version']} threads={res['threads']}: "
            f"init {res['init_ms']:.1f} ms, first {res['first_inference_ms']:.3f} ms, "
            f"p50 {res['p50_ms']:.3f} ms, p90 {res['p90_ms']:.3f} ms, peak {res['peak_memory_mb']:.1f} MB "
            f"(runtime {res['runtime_footprint_mb']:.1f} MB)\n"
        )
    else:
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
