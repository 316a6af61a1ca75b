"""Runner, host measurement and cost model, on real runtimes (onnxruntime, ai-edge-litert)."""

import ast
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeprune.bench import costmodel, microbench
from edgeprune.bench.host import RUNNER, measure_host
from edgeprune.errors import InputError
from edgeprune.targets import load_target

RNG = np.random.default_rng(0)


def _save(nodes, inputs, outputs, inits, path):
    g = helper.make_graph(nodes, Path(path).stem, inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def _w(name, *shape):
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.1).astype(np.float32), name)


def vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def cnn(path, c1=8, c2=16, hw=8):
    """Conv(1->c1)+Relu, Conv(c1->c2)+Relu, Add-free, GlobalAveragePool, Flatten, Gemm(->10)."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["ar", "w2", "b2"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["cr"]),
             helper.make_node("GlobalAveragePool", ["cr"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    inits = [_w("w1", c1, 1, 3, 3), _w("b1", c1), _w("w2", c2, c1, 3, 3), _w("b2", c2), _w("wf", 10, c2), _w("bf", 10)]
    return _save(nodes, [vi("x", [1, 1, hw, hw])], [vi("y", [1, 10])], inits, path)


def chain(path, c, hw, n):
    """n x (Conv c->c + Relu) on a [1,c,hw,hw] input."""
    nodes, prev = [], "x"
    for i in range(n):
        nodes += [helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    return _save(nodes, [vi("x", [1, c, hw, hw])], [vi("y", [1, c, hw, hw])],
                 [_w(f"w{i}", c, c, 3, 3) for i in range(n)], path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_models")
    out = {"cnn": cnn(d / "cnn.onnx"), "cnn_big": cnn(d / "cnn_big.onnx", 32, 64, 28)}
    # residual: a = conv(x); b = conv(a); s = a + b -> liveness peak holds a, b and s at the Add
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "w2"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a", "b"], ["s"])]
    out["res"] = _save(nodes, [vi("x", [1, 4, 8, 8])], [vi("s", [1, 4, 8, 8])],
                       [_w("w1", 4, 4, 3, 3), _w("w2", 4, 4, 3, 3)], d / "res.onnx")
    # int8 input
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["xf", "w"], ["y"])]
    out["int8in"] = _save(nodes, [vi("x", [1, 16], TensorProto.INT8)], [vi("y", [1, 4])], [_w("w", 16, 4)],
                          d / "int8in.onnx")
    return out


@pytest.fixture(scope="module")
def tflite_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    litert_torch = pytest.importorskip("litert_torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8 * 64, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.c(x)).flatten(1))

    p = tmp_path_factory.mktemp("tfl") / "net.tflite"
    litert_torch.convert(Net().eval(), (torch.randn(1, 1, 8, 8),)).export(str(p))
    return p


def _runner(args, python=sys.executable, **kw):
    return subprocess.run([python, str(RUNNER), *map(str, args)], capture_output=True, text=True, **kw)


# ------------------------------------------------------------------------------------------- runner


def test_runner_is_standalone():
    tree = ast.parse(RUNNER.read_text())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in runner.py"
            mods.add(node.module.split(".")[0])
    assert "torch" not in mods and "edgeprune" not in mods
    assert mods <= {"__future__", "argparse", "json", "os", "platform", "sys", "time", "resource", "numpy",
                    "onnxruntime", "tensorflow", "importlib"}


def test_runner_onnx_cli(models, tmp_path):
    out = tmp_path / "o.json"
    # run a copy of the runner from an empty folder, as on a device; check no torch/edgeprune got imported
    code = ("import runpy, sys; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__'); "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('edgeprune')]; "
            "sys.exit(9 if bad else 0)")
    (tmp_path / "runner.py").write_text(RUNNER.read_text())
    p = subprocess.run([sys.executable, "-c", code, "runner.py", str(models["cnn"]), "--runs", "30", "--warmup",
                        "5", "--threads", "1", "--json", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    for k in ("init_ms", "first_inference_ms", "warmup_avg_ms", "avg_ms", "std_ms", "min_ms", "max_ms", "p50_ms",
              "p90_ms", "p99_ms", "peak_memory_mb", "runtime_footprint_mb", "model_footprint_mb"):
        assert isinstance(r[k], float) and r[k] >= 0, k
    assert r["runtime"] == "onnxruntime" and r["runtime_version"].startswith("1.")
    assert len(r["runs_ms"]) == 30 and r["runs"] == 30 and r["threads"] == 1
    assert r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert r["p50_ms"] == pytest.approx(float(np.percentile(r["runs_ms"], 50)))
    assert r["avg_ms"] == pytest.approx(statistics.mean(r["runs_ms"]))
    assert r["model_footprint_mb"] == pytest.approx(r["peak_memory_mb"] - r["runtime_footprint_mb"])
    assert 20 < r["runtime_footprint_mb"] < r["peak_memory_mb"]  # python + numpy + onnxruntime imported
    assert r["memory_source"] == "VmHWM"
    assert r["inputs"] == [{"name": "x", "shape": [1, 1, 8, 8], "dtype": "float32"}]
    assert r["machine"]["cores"] >= 1 and r["machine"]["machine"]


def test_runner_int8_input(models, tmp_path):
    p = _runner([models["int8in"], "--runs", "3", "--json", tmp_path / "o.json"])
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "o.json").read_text())["inputs"][0]["dtype"] == "int8"


def test_runner_tflite(tflite_model, tmp_path):
    p = _runner([tflite_model, "--runs", "20", "--warmup", "2", "--json", tmp_path / "o.json"])
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "o.json").read_text())
    assert r["runtime"] == "ai_edge_litert" and r["runtime_version"] == "2.3.0"
    assert r["format"] == "tflite" and r["inputs"][0]["shape"] == [1, 1, 8, 8]
    assert 0 < r["p50_ms"] < 50 and r["peak_memory_mb"] > r["runtime_footprint_mb"]


def test_runner_errors(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    p = _runner([bad, "--runs", "2"])
    assert p.returncode == 4 and "cannot load" in p.stderr
    p = _runner([tmp_path / "m.pt"])
    assert p.returncode == 2 and ".onnx or .tflite" in p.stderr
    # no TFLite interpreter importable -> exit 3 with the install hint
    blocker = ("import sys, runpy\nclass B:\n def find_spec(self, n, p=None, t=None):\n"
               "  if n.split('.')[0] in ('ai_edge_litert', 'tflite_runtime', 'tensorflow'): raise ImportError(n)\n"
               "sys.meta_path.insert(0, B()); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    m = tmp_path / "m.tflite"
    m.write_bytes(b"x")
    p = subprocess.run([sys.executable, "-c", blocker, str(RUNNER), str(m)], capture_output=True, text=True)
    assert p.returncode == 3 and "pip install ai-edge-litert" in p.stderr


def test_measure_host_medians(models):
    r = measure_host(models["cnn"], threads=1, runs=20, warmup=2, repeats=3)
    assert r["source"] == "measured" and r["where"] == "host" and r["repeats"] == 3 and r["runs"] == 20
    assert len(r["raw"]) == 3 and all(len(x["runs_ms"]) == 20 for x in r["raw"])
    assert r["p50_ms"] == statistics.median(x["p50_ms"] for x in r["raw"])
    assert r["peak_memory_mb"] == statistics.median(x["peak_memory_mb"] for x in r["raw"])
    assert r["machine"]["cores"] >= 1
    with pytest.raises(InputError, match="not found"):
        measure_host(models["cnn"].with_name("nope.onnx"))


# ------------------------------------------------------------------------------------------- cost model


def test_analyze_counts(models):
    gc = costmodel.analyze(models["cnn"])
    conv1 = 8 * 8 * 8 * 1 * 9
    conv2 = 16 * 8 * 8 * 8 * 9
    gemm = 16 * 10
    assert gc.macs == conv1 + conv2 + gemm
    assert [o.op_type for o in gc.ops] == ["Conv", "Conv", "GlobalAveragePool", "Gemm"]  # Relu fused, Flatten free
    assert gc.ops[0].fused == ["Relu"]
    assert gc.weight_bytes == 4 * (8 * 9 + 8 + 16 * 8 * 9 + 16 + 160 + 10)
    # conv2 moves its weights + input (8x8x8) + output (16x8x8) in fp32
    assert gc.ops[1].bytes == 4 * (16 * 8 * 9 + 16) + 4 * (8 * 64 + 16 * 64)
    # liveness: the largest step is conv2 with its input and output alive
    assert gc.activation_peak_bytes == 4 * (8 * 64 + 16 * 64)
    g8 = costmodel.analyze(models["cnn"], "int8")
    assert g8.macs == gc.macs and g8.activation_peak_bytes == gc.activation_peak_bytes / 4
    assert g8.weight_bytes == (8 * 9 + 16 * 8 * 9 + 160) + 4 * (8 + 16 + 10)


def test_liveness_residual(models):
    gc = costmodel.analyze(models["res"])
    t = 4 * 4 * 64  # one [1,4,8,8] fp32 tensor
    assert gc.activation_peak_bytes == 3 * t  # a, b and a+b alive at the Add


def test_analyze_qdq_int8(models, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": RNG.standard_normal((1, 1, 8, 8)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    q = tmp_path / "cnn_int8.onnx"
    quantize_static(str(models["cnn"]), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    assert any(n.op_type == "DequantizeLinear" for n in onnx.load(str(q)).graph.node)
    g8 = costmodel.analyze(q, "int8")
    gf = costmodel.analyze(models["cnn"], "fp32")
    assert g8.macs == gf.macs
    assert [o.op_type for o in g8.ops] == [o.op_type for o in gf.ops]  # Q/DQ are not ops of their own
    assert g8.weight_bytes < gf.weight_bytes / 2


def test_padding_to_width_multiple(tmp_path):
    a = costmodel.analyze(cnn(tmp_path / "a.onnx", 13, 27), pad_to=16)
    b = costmodel.analyze(cnn(tmp_path / "b.onnx", 16, 32), pad_to=16)
    assert a.macs < b.macs
    ratio = a.ops[0].work / a.ops[0].flops  # conv1: 13 output channels computed as 16
    assert 1.2 < ratio <= 16 / 13 and b.ops[0].work == b.ops[0].flops


def test_predict_targets(models):
    p4 = costmodel.predict(models["cnn_big"], "rpi4")
    p5 = costmodel.predict(models["cnn_big"], "rpi5")
    assert p4["source"] == "predicted" and p4["model"].startswith("roofline-v1 (calibrated on host")
    assert p4["calibration_key"] == "tflite-fp32"
    assert p4["latency_ms"] > p5["latency_ms"] > 0
    assert p4["macs"] == costmodel.analyze(models["cnn_big"]).macs
    assert p4["latency_ms"] == pytest.approx(p4["roofline_ms"] + p4["overhead_ms"])
    i8 = costmodel.predict(models["cnn_big"], "rpi5", dtype="int8")
    assert i8["latency_ms"] < p5["latency_ms"] and i8["weight_bytes"] < p5["weight_bytes"]
    assert p5["peak_memory_mb"] == pytest.approx((p5["weight_bytes"] + costmodel.analyze(
        models["cnn_big"]).activation_peak_bytes) / 2**20)
    assert p5["model_footprint_mb"] > p5["peak_memory_mb"]
    jn = costmodel.predict(models["cnn_big"], "jetson-nano")
    assert jn["runtime"] == "onnxruntime"


def test_calibration_recovers_known_factors(tmp_path):
    """Fake 'measurements' made with known factors must be fitted back."""
    true = {"eff_compute": 0.4, "eff_mem": 2.0, "per_op_overhead_us": 1.5, "per_run_overhead_us": 3.0,
            "host_clock_ghz": load_target("host").fact("clock_ghz")}
    cal = {"factors": {"onnxruntime-fp32": true}}
    samples = []
    for i, (c, hw, n) in enumerate([(4, 8, 1), (8, 8, 6), (16, 16, 2), (32, 28, 3), (8, 28, 8), (64, 8, 4), (2, 4, 12)]):
        p = chain(tmp_path / f"m{i}.onnx", c, hw, n)  # varied op counts and sizes
        samples.append((p, costmodel.predict(p, "host", runtime="onnxruntime", calibration=cal)["latency_ms"]))
    fit = costmodel.fit_factors(samples, "host")
    assert fit["fit_median_abs_pct_err"] < 1.0
    assert fit["eff_compute"] == pytest.approx(0.4, rel=0.1)
    assert fit["per_op_overhead_us"] == pytest.approx(1.5, rel=0.2)
    out = tmp_path / "cal.json"
    costmodel.calibrate(samples, runtime="onnxruntime", out=out)
    assert "onnxruntime-fp32" in json.loads(out.read_text())["factors"]


def test_shipped_calibration_predicts_host_within_2x(models):
    """The packaged factors against a fresh measurement on this (noisy) host: a loose but real bound."""
    cal = costmodel.load_calibration()
    assert "onnxruntime-fp32" in cal["factors"] and "tflite-fp32" in cal["factors"]
    pred = costmodel.predict(models["cnn_big"], "host", runtime="onnxruntime")["latency_ms"]
    meas = measure_host(models["cnn_big"], runs=50, warmup=5, repeats=3)["p50_ms"]
    assert 0.5 < pred / meas < 2.0, (pred, meas)


def test_measured_profile_uses_measured_factors(tmp_path, models):
    base = load_target("rpi4")
    prof = microbench.measured_profile(base, {"peak_fp32_gflops": 20.0, "mem_bandwidth_gbs": 4.0,
                                              "matmul_p50_ms": 27.0, "stream_p50_ms": 130.0},
                                       where="pi@rpi", threads=4, runtime="onnxruntime 1.31.1",
                                       machine={"cores": 4, "cpu": "Cortex-A72"})
    p = tmp_path / "rpi4-measured.toml"
    p.write_text(microbench.target_to_toml(prof))
    t = load_target(p)
    assert t.device["peak_fp32_gflops"].basis == "measured" and t.device["peak_fp32_gflops"].value == 20.0
    r = costmodel.predict(models["cnn_big"], t)
    assert r["calibration_key"].endswith("@measured")


@pytest.mark.parametrize("name", ["rpi4", "jetson-orin-nano", "android-flagship", "host"])
def test_profile_toml_roundtrip(tmp_path, name):
    t = load_target(name)
    p = tmp_path / f"{name}.toml"
    p.write_text(microbench.target_to_toml(t))
    u = load_target(p)
    assert u.device == t.device and u.budget == t.budget and u.artifacts == t.artifacts and u.threads == t.threads


def test_microbench_graphs_run(tmp_path):
    import onnxruntime as ort

    b = microbench.build_microbench(tmp_path)
    s = ort.InferenceSession(b["matmul"]["path"], providers=["CPUExecutionProvider"])
    y = s.run(None, {"x": np.ones((256, 256), np.float32)})[0]
    assert y.shape == (256, 256) and np.isfinite(y).all()
    assert b["matmul"]["flops"] == 2 * 256 ** 3 * 8
    assert costmodel.analyze(b["matmul"]["path"]).macs == 256 ** 3 * 8
    assert math.isclose(b["stream"]["bytes"], 8 * 16 * 2**20 * 4)
