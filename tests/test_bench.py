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

from edgeprune.bench import costfit, costmodel, microbench
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
    assert p4["source"] == "predicted" and p4["model"].startswith("roofline-v2, tflite-fp32 factors calibrated on")
    assert p4["calibration_key"] == "tflite-fp32" and p4["runtime"] == "tflite"
    assert "unvalidated on the device" in p4["uncertainty"] and "±2x" in p4["uncertainty"]  # published basis
    assert p4["basis"] == "derived" and p5["basis"] == "unverified" and "±3x" in p5["uncertainty"]
    assert p4["latency_ms"] > p5["latency_ms"] > 0
    assert p4["macs"] == costmodel.analyze(models["cnn_big"]).macs
    assert p4["latency_ms"] == pytest.approx(p4["roofline_ms"] + p4["overhead_ms"])
    i8 = costmodel.predict(models["cnn_big"], "rpi5", dtype="int8")
    assert i8["latency_ms"] < p5["latency_ms"] and i8["weight_bytes"] < p5["weight_bytes"]
    gc = costmodel.analyze(models["cnn_big"])
    assert p5["tensor_mb"] == pytest.approx((p5["weight_bytes"] + gc.activation_peak_bytes) / 2**20)
    # the one predicted memory figure is the calibrated footprint (session base + tensors), >= the tensors
    assert p5["peak_memory_mb"] > p5["tensor_mb"] and "session base" in p5["peak_memory_how"]
    jn = costmodel.predict(models["cnn_big"], "jetson-nano")
    assert jn["runtime"] == "onnxruntime" and jn["calibration_key"] == "onnxruntime-fp32"


def _conv_chain_big(tmp_path):
    return chain(tmp_path / "big.onnx", 64, 28, 6)  # 6 x 3x3 conv 64->64 on 28x28: 350 MFLOP


def test_target_throughput_is_the_published_sustained_figure(tmp_path):
    """A large conv net runs at the profile's sustained throughput (ncnn's published Pi 4 figure), not at the
    host's efficiency x the paper peak (that predicted ~42 GFLOP/s on a Pi 4, 3x too optimistic)."""
    p = _conv_chain_big(tmp_path)
    t = load_target("rpi4")
    r = costmodel.predict(p, t, runtime="tflite")
    achieved = r["flops"] / (r["latency_ms"] / 1e3) / 1e9
    sustained = t.fact("sustained_fp32_gflops")
    assert sustained == 15.8 and t.device["sustained_fp32_gflops"].basis == "derived"
    assert 0.8 * sustained < achieved <= sustained  # overheads and memory only slow it down
    # fewer threads: slower, down to the one-thread figure for one thread
    r1 = costmodel.predict(p, t, runtime="tflite", threads=1)
    achieved1 = r1["flops"] / (r1["latency_ms"] / 1e3) / 1e9
    assert r1["latency_ms"] > r["latency_ms"] and achieved1 <= t.fact("sustained_1t_fp32_gflops")


def test_small_ops_run_on_one_thread(tmp_path):
    """Sub-linear thread scaling: an op under THREAD_MIN_FLOPS gets the one-thread rate."""
    small = chain(tmp_path / "small.onnx", 4, 8, 1)  # one conv of 2x4x4x9x64 = 18 kFLOP
    t = load_target("rpi4")
    gc = costmodel.analyze(small, pad_to=t.width_multiple)
    assert all(o.work < costmodel.THREAD_MIN_FLOPS for o in gc.ops)
    a = costmodel.predict(small, t, runtime="tflite")
    b = costmodel.predict(small, t, runtime="tflite", threads=1)
    assert a["roofline_ms"] == pytest.approx(b["roofline_ms"])


def test_target_memory_capped_at_dram_for_large_working_sets(tmp_path):
    """An op whose bytes exceed the target's L2 moves them at DRAM bandwidth (eff 1), whatever the host's
    cache-boosted eff_mem; one that fits keeps the host's factor."""
    t = load_target("rpi4")
    cal = costmodel.load_calibration()
    f, _ = costmodel.factors_for(cal, "tflite", "fp32")
    host = costmodel.host_profile()
    r = costmodel.target_rates(t, f, f, "fp32", t.threads, host)
    assert r.eff_mem_dram == 1.0 and r.eff_mem_cached == max(1.0, f["eff_mem"])
    assert r.cache_bytes == t.fact("l2_cache_kb") * 1024
    big = costmodel.OpCost("w", "Gemm", weight_bytes=4 * 2**20, act_bytes=0)
    _, mem_us = r.op_us(big)
    assert mem_us == pytest.approx(4 * 2**20 / (t.fact("mem_bandwidth_gbs") * 1e3))


def test_per_op_overhead_scales_with_per_lane_speed():
    t = load_target("rpi4")
    cal = costmodel.load_calibration()
    f, _ = costmodel.factors_for(cal, "onnxruntime", "fp32")
    host = costmodel.host_profile()
    r = costmodel.target_rates(t, f, f, "fp32", t.threads, host)
    host_lane = f["eff_compute"] * host.peak_compute("fp32") / host.fact("simd_fp32_lanes")
    tgt_lane = t.fact("sustained_1t_fp32_gflops") / t.fact("simd_fp32_lanes")
    assert r.per_op_us == pytest.approx(f["per_op_overhead_us"] * host_lane / tgt_lane)


def test_host_profile_spec_peak_from_cpuinfo():
    from edgeprune.bench import hostcal

    h = costmodel.host_profile()
    s = hostcal.host_spec()
    assert h.device["peak_fp32_gflops"].basis == "derived" and "FLOP/cycle" in h.device["peak_fp32_gflops"].source
    assert h.peak_compute("fp32") == pytest.approx(s["clock_ghz"] * s["fp32_per_cycle"], rel=1e-3)
    assert h.device["cpu"].value.startswith(hostcal.cpu_info()["model_name"])
    assert h.device["mem_bandwidth_gbs"].basis == "measured" and h.fact("mem_bandwidth_gbs") > 0.5


@pytest.mark.parametrize("flags,isa,fp32,int8", [
    (["fma", "avx2", "avx512f", "avx512_vnni"], "AVX-512", 64, 256),
    (["fma", "avx2"], "AVX2+FMA", 32, 64),
    (["fp", "asimd", "asimddp"], "NEON", 16, 64),
    (["fp", "asimd"], "NEON", 16, 32),
])
def test_simd_width_from_flags(flags, isa, fp32, int8):
    from edgeprune.bench.hostcal import simd_of

    s = simd_of(flags)
    assert (s["isa"], s["fp32_per_cycle"], s["int8_per_cycle"]) == (isa, fp32, int8)


def test_calibration_recovers_known_factors(tmp_path):
    """Fake 'measurements' made with known factors must be fitted back."""
    host = costmodel.host_profile()
    true = {"eff_compute": 0.4, "eff_mem": 2.0, "eff_mem_large": 0.8, "per_op_overhead_us": 1.5,
            "per_run_overhead_us": 3.0, "host_bandwidth_gbs": host.fact("mem_bandwidth_gbs"),
            "host_cache_kb": host.fact("l2_cache_kb", costmodel.DEFAULT_CACHE_KB)}
    cal = {"factors": {"onnxruntime-int8": true}}
    samples = []
    for i, (c, hw, n) in enumerate([(4, 8, 1), (8, 8, 6), (16, 16, 2), (32, 28, 3), (8, 28, 8), (64, 8, 4),
                                    (2, 4, 12), (96, 28, 2)]):
        p = chain(tmp_path / f"m{i}.onnx", c, hw, n)  # varied op counts and sizes
        samples.append((p, costmodel.predict(p, "host", runtime="onnxruntime", dtype="int8",
                                             calibration=cal)["latency_ms"]))
    fit = costfit.fit_factors(samples, host, dtype="int8")
    assert fit["fit_median_abs_pct_err"] < 1.0
    assert fit["eff_compute"] == pytest.approx(0.4, rel=0.1)
    assert fit["per_op_overhead_us"] == pytest.approx(1.5, rel=0.2)


def test_committed_calibration_and_results_agree():
    """calibration.json holds the factors and leave-one-model-out errors of benchmarks/costmodel/results.json,
    for all four runtime/precision keys, measured on the built-in models."""
    res = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "costmodel" / "results.json").read_text())
    cal = json.loads(costmodel.CALIBRATION_PATH.read_text())
    assert set(cal["factors"]) == {"onnxruntime-fp32", "onnxruntime-int8", "tflite-fp32", "tflite-int8"}
    assert cal["fingerprint"] == res["fingerprint"]
    from edgeprune.models import MODELS

    assert {r["model"] for r in res["rows"]} == set(MODELS)  # every built-in model, nothing else
    for key, f in cal["factors"].items():
        assert f["lomo_median_abs_pct_err"] == pytest.approx(res["summary"][key]["lomo_median_abs_pct_err"])
    # the goal (median abs error < 20%) is met where it is stable: TFLite fp32
    assert res["summary"]["tflite-fp32"]["lomo_median_abs_pct_err"] < 20


def test_host_prediction_error_on_the_default_build(built):
    """The shipped calibration against fresh host measurements of the default build's artifacts: each error
    within the worst leave-one-model-out error committed for that runtime when calibrated on this CPU; on another
    CPU (the host's spec peak is re-read from /proc/cpuinfo, the efficiencies are the other CPU's) within 3x."""
    run, _ = built
    cal = costmodel.load_calibration()
    info = costmodel.calibration_info(cal)
    res = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "costmodel" / "results.json").read_text())
    bench = json.loads((run / "bench" / "rpi4.json").read_text())
    exp = json.loads((run / "export.json").read_text())
    paths = {f: str(run / exp["dir"] / a["path"]) for f, a in exp["artifacts"].items() if a.get("ok")}
    for fmt in ("onnx", "tflite"):
        key = f"{costmodel.runtime_of(fmt)}-fp32"
        pred = costmodel.predict(costmodel.graph_for_artifact(paths, fmt), "host", runtime=costmodel.runtime_of(fmt))
        meas = bench["artifacts"][fmt]["host"]["p50_ms"]
        if info["matches_this_host"]:
            err = abs(pred["latency_ms"] / meas - 1) * 100
            assert err <= res["summary"][key]["lomo_max_abs_pct_err"] + 10, (fmt, pred["latency_ms"], meas)
        else:
            assert 1 / 3 <= pred["latency_ms"] / meas <= 3, (fmt, info["host_cpu"], pred["latency_ms"], meas)


def test_measured_profile_is_used(tmp_path, models):
    base = load_target("rpi4")
    derived = {"sustained_fp32_gflops": 20.0, "sustained_1t_fp32_gflops": 6.0, "sustained_int8_gops": 30.0,
               "mem_bandwidth_gbs": 4.0, "per_op_overhead_us": 3.0,
               "p50_ms": {"matmul@profile": 13.4, "matmul@1": 44.7, "matmul_int8@profile": 8.9,
                          "stream@profile": 130.0, "overhead@1": 0.192}}
    prof = microbench.measured_profile(base, derived, where="pi@rpi", threads=4, runtime="onnxruntime 1.31.1",
                                       machine={"cores": 4, "cpu": "Cortex-A72"})
    p = tmp_path / "rpi4-measured.toml"
    p.write_text(microbench.target_to_toml(prof))
    t = load_target(p)
    f = t.device["sustained_fp32_gflops"]
    assert f.basis == "measured" and f.value == 20.0 and "pi@rpi" in f.source and "15.8" in f.note
    assert t.device["peak_fp32_gflops"] == base.device["peak_fp32_gflops"]  # the spec peak stays the spec
    r = costmodel.predict(models["cnn_big"], t)
    assert r["basis"] == "measured" and "micro-benchmarks" in r["uncertainty"]
    assert "per-op overhead measured on the device" in r["how"]


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
    for name, shape in (("matmul", (256, 256)), ("matmul_int8", (256, 256)), ("overhead", (1, 16))):
        s = ort.InferenceSession(b[name]["path"], providers=["CPUExecutionProvider"])
        y = s.run(None, {"x": np.ones(shape, np.float32)})[0]
        assert y.shape == shape and np.isfinite(y).all()
    assert any(n.op_type == "DequantizeLinear" for n in onnx.load(b["matmul_int8"]["path"]).graph.node)
    assert b["matmul"]["flops"] == 2 * 256 ** 3 * 8
    assert costmodel.analyze(b["matmul"]["path"]).macs == 256 ** 3 * 8
    assert math.isclose(b["stream"]["bytes"], 8 * 16 * 2**20 * 4)
    assert len(costmodel.analyze(b["overhead"]["path"]).ops) == b["overhead"]["ops"] == 64


def test_residual_add_fusion_and_views(tmp_path):
    """onnxruntime fuses Conv + residual Add (+Relu); views cost a dispatch, not compute."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "w2"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["x", "b"], ["s"]),
             helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("Flatten", ["r"], ["y"])]
    p = _save(nodes, [vi("x", [1, 4, 8, 8])], [vi("y", [1, 256])], [_w("w1", 4, 4, 3, 3), _w("w2", 4, 4, 3, 3)],
              tmp_path / "resadd.onnx")
    plain = costmodel.analyze(p)
    fused = costmodel.analyze(p, fuse_add=True)
    assert [o.op_type for o in plain.ops] == ["Conv", "Conv", "Add"] and plain.ops[2].fused == ["Relu"]
    assert [o.op_type for o in fused.ops] == ["Conv", "Conv"] and fused.ops[1].fused == ["Add", "Relu"]
    assert fused.ops[1].act_bytes == plain.ops[1].act_bytes + 4 * 4 * 64  # reads the shortcut too
    assert plain.n_views == fused.n_views == 1 and fused.n_dispatched == 3
    assert costmodel.fuses_add("onnx", "fp32") and not costmodel.fuses_add("tflite", "fp32")
    assert not costmodel.fuses_add("onnxruntime", "int8")


def test_cached_host_calibration_is_preferred(tmp_path, monkeypatch):
    """`edgeprune calibrate --host` caches per CPU; load_calibration() picks the cache for this CPU."""
    from edgeprune.bench import hostcal

    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path))
    assert costmodel.load_calibration()["_path"] == "packaged calibration.json"
    cal = hostcal.calibration_dict({"onnxruntime-fp32": dict(costmodel.DEFAULT_FACTORS, eff_compute=0.123)}, "test")
    path = hostcal.cached_calibration_path(cal["fingerprint"])
    assert path.parent == tmp_path
    path.write_text(json.dumps(cal))
    got = costmodel.load_calibration()
    assert got["_path"] == "user cache" and got["factors"]["onnxruntime-fp32"]["eff_compute"] == 0.123
    info = costmodel.calibration_info(got)
    assert info["matches_this_host"] and info["host_cpu"] == hostcal.host_spec()["cpu"]


def test_bench_stage_predicts_with_the_artifacts_own_runtime(built):
    """ONNX artifacts are predicted with onnxruntime factors, TFLite ones with TFLite's, INT8 with INT8's."""
    run, _ = built
    bench = json.loads((run / "bench" / "rpi4.json").read_text())
    keys = {f: e["predicted"]["calibration_key"] for f, e in bench["artifacts"].items()}
    assert keys == {"onnx": "onnxruntime-fp32", "onnx-int8": "onnxruntime-int8", "tflite": "tflite-fp32",
                    "tflite-int8": "tflite-int8"}
    assert bench["artifacts"]["tflite-int8"]["predicted"]["graph"] == "onnx-int8"


def test_calibrate_host_quick(tmp_path, monkeypatch):
    """`edgeprune calibrate --host` on three built-in models: exports them, measures all four artifacts and
    writes a calibration for this CPU that load_calibration then prefers."""
    from edgeprune.bench import hostcal

    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path / "cache"))
    res = hostcal.calibrate_host(models=["cnn", "conv1d", "mlp"], runs=10, progress=lambda m: None)
    assert res["path"] == str(hostcal.cached_calibration_path())
    cal = costmodel.load_calibration()
    assert cal["_path"] == "user cache" and cal["fingerprint"] == hostcal.fingerprint()
    assert set(cal["factors"]) == {"onnxruntime-fp32", "onnxruntime-int8", "tflite-fp32", "tflite-int8"}
    for f in cal["factors"].values():
        assert f["n_models"] == 3 and 0 < f["eff_compute"] <= 5 and f["host_peak_basis"] == "derived"
        assert "edgeprune calibrate --host" in f["note"]
