"""Kernel-level predictor: fusions read from the real runtimes, the per-kernel regression, host integration."""

import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeprune.bench import costmodel, fusion, kernels
from edgeprune.errors import InputError

RNG = np.random.default_rng(0)


def _w(name, *shape):
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.1).astype(np.float32), name)


def _save(nodes, x_shape, y_name, y_shape, inits, path):
    g = helper.make_graph(nodes, Path(path).stem, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info(y_name, TensorProto.FLOAT, y_shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return str(path)


def conv_bn_relu_res(path, c=16, hw=8):
    """Conv+BN+Relu, Conv+BN, residual Add, Relu, GlobalAveragePool, Flatten, MatMul+Add (a linear layer)."""
    nodes, inits = [], []
    for i, src in enumerate(["x", "r0"]):
        nodes += [helper.make_node("Conv", [src, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("BatchNormalization", [f"c{i}", f"g{i}", f"b{i}", f"m{i}", f"v{i}"], [f"n{i}"])]
        inits += [_w(f"w{i}", c, c, 3, 3), _w(f"g{i}", c), _w(f"b{i}", c), _w(f"m{i}", c),
                  numpy_helper.from_array(np.ones(c, np.float32), f"v{i}")]
        if i == 0:
            nodes.append(helper.make_node("Relu", ["n0"], ["r0"]))
    nodes += [helper.make_node("Add", ["n1", "r0"], ["s"]), helper.make_node("Relu", ["s"], ["sr"]),
              helper.make_node("GlobalAveragePool", ["sr"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("MatMul", ["f", "wf"], ["mm"]), helper.make_node("Add", ["mm", "bf"], ["y"])]
    inits += [_w("wf", c, 10), _w("bf", 10)]
    return _save(nodes, [1, c, hw, hw], "y", [1, 10], inits, path)


def conv_chain(path, c, hw, n, k=3):
    nodes, prev = [], "x"
    for i in range(n):
        nodes += [helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[k // 2] * 4),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    return _save(nodes, [1, c, hw, hw], "y", [1, c, hw, hw], [_w(f"w{i}", c, c, k, k) for i in range(n)], path)


def test_onnxruntime_fusions_are_read_from_its_optimized_graph(tmp_path):
    ks = fusion.ort_kernels(conv_bn_relu_res(tmp_path / "m.onnx"))
    ops = [k.op for k in ks]
    assert "BatchNormalization" not in ops and "Relu" not in ops  # BN folded, activations fused
    convs = [k for k in ks if k.type == "conv"]
    assert len(convs) == 2 and "Relu" in convs[0].fused
    assert any("Add" in k.fused for k in convs)  # the residual Add went into the second conv
    assert "Add" not in ops and "MatMul" not in ops and any(k.type == "gemm" for k in ks)  # MatMul+Add -> Gemm
    assert convs[0].macs == 16 * 16 * 9 * 64 and convs[0].cin == 16 and convs[0].k == 3
    s = fusion.summary(ks)
    assert s["types"]["conv"] == 2 and any("Add" in f for f in s["fused"])


def test_int8_kernels_and_nhwc_shapes(tmp_path):
    """onnxruntime runs a QDQ conv as QLinearConv in NHWC; the MACs must still be the conv's."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    src = conv_chain(tmp_path / "c.onnx", 16, 8, 2)

    class R(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": RNG.random((1, 16, 8, 8), dtype=np.float32)} for _ in range(2)])

        def get_next(self):
            return next(self.it, None)

    dst = tmp_path / "c.int8.onnx"
    quantize_static(src, str(dst), R(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    ks = fusion.ort_kernels(dst)
    q = [k for k in ks if k.op == "QLinearConv"]
    assert len(q) == 2 and all(k.macs == 16 * 16 * 9 * 64 for k in q)
    assert all(k.in_bytes == 16 * 64 for k in q)  # one byte per element


def test_tflite_kernels_of_a_built_artifact(built):
    run, _ = built
    exp = json.loads((run / "export.json").read_text())
    p = run / exp["dir"] / exp["artifacts"]["tflite"]["path"]
    ks = fusion.tflite_kernels(p)
    types = fusion.summary(ks)["types"]
    assert types.get("conv", 0) + types.get("dwconv", 0) >= 2 and types.get("gemm", 0) >= 1
    assert all(k.op != "DELEGATE" for k in ks)
    onnx_macs = costmodel.analyze(run / exp["dir"] / exp["artifacts"]["onnx"]["path"]).macs
    assert sum(k.macs for k in ks) == pytest.approx(onnx_macs, rel=0.01)


def test_missing_file_is_a_one_line_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        fusion.ort_kernels(tmp_path / "nope.onnx")


def _synthetic(theta, run_us):
    samples = []
    for c, hw, n in [(4, 8, 1), (8, 8, 6), (16, 16, 2), (32, 28, 3), (8, 28, 8), (64, 8, 4), (2, 4, 12), (96, 14, 2)]:
        ks = [fusion.Kernel(op="Conv", type="conv", macs=c * c * 9 * hw * hw, in_bytes=4 * c * hw * hw,
                            out_bytes=4 * c * hw * hw, w_bytes=4 * c * c * 9, cin=c, cout=c, k=3) for _ in range(n)]
        ks.append(fusion.Kernel(op="Add", type="eltwise", in_bytes=8 * c * hw * hw, out_bytes=4 * c * hw * hw))
        samples.append((ks, kernels.predict_us(ks, {"theta": theta, "run_us": run_us})))
    return samples


def test_fit_recovers_known_theta_and_is_monotone():
    theta = {"conv": {"n": 2.0, "macs": 20.0, "pad": 10.0, "bytes": 5.0}, "memory": {"n": 0.5, "bytes": 30.0}}
    samples = _synthetic(theta, 4.0)
    p = kernels.fit(samples)
    assert p["fit_median_abs_pct_err"] < 2.0
    assert p["theta"]["conv"]["macs"] == pytest.approx(20.0, rel=0.1)
    small = [fusion.Kernel(op="Conv", type="conv", macs=1e6, cin=16, cout=16, k=3)]
    big = [fusion.Kernel(op="Conv", type="conv", macs=4e6, cin=16, cout=16, k=3)]
    assert kernels.predict_us(big, p) > kernels.predict_us(small, p) > 0
    with pytest.raises(InputError, match="at least 3"):
        kernels.fit(samples[:2])


def _time_us(path, runs=60):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = RNG.random(s.get_inputs()[0].shape, dtype=np.float32)
    for _ in range(5):
        s.run(None, {"x": x})
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        s.run(None, {"x": x})
        ts.append((time.perf_counter() - t0) * 1e6)
    return float(np.median(ts))


def test_fitted_on_small_chains_predicts_a_held_out_one(tmp_path):
    """Real onnxruntime timings: fit on conv chains of some shapes, predict an unseen shape within a loose bound
    (the shared test machine is noisy; the benchmark reports the real error)."""
    train = [(16, 8, 1), (16, 8, 4), (32, 8, 2), (8, 16, 3), (32, 16, 1), (16, 16, 2), (64, 8, 1)]
    samples = []
    for i, (c, hw, n) in enumerate(train):
        p = conv_chain(tmp_path / f"t{i}.onnx", c, hw, n)
        samples.append((fusion.ort_kernels(p), _time_us(p)))
    params = kernels.fit(samples)
    held = conv_chain(tmp_path / "held.onnx", 32, 12, 3)
    pred, meas = kernels.predict_us(fusion.ort_kernels(held), params), _time_us(held)
    assert 0.5 < pred / meas < 2.0, (pred, meas)


def test_host_prediction_uses_the_kernel_model_and_carries_its_band(tmp_path):
    p = conv_bn_relu_res(tmp_path / "m.onnx")
    cal = costmodel.load_calibration(None)
    cal = dict(cal, kernel_factors_hosts={}, kernel_factors={"onnxruntime-fp32": {
        "theta": {"conv": {"n": 1.0, "macs": 20.0}, "gemm": {"n": 1.0}}, "run_us": 3.0,
        "heldout": {"n": 40, "median_abs_pct": 4.0, "p90_abs_pct": 9.0, "within_10_pct": 92.0}}})
    r = costmodel.predict(p, "host", runtime="onnxruntime", calibration=cal, threads=1, detail=True)
    assert r["model"].startswith(kernels.MODEL_NAME) and r["error_band"]["p90_abs_pct"] == 9.0
    lo, hi = r["latency_band_ms"]
    assert lo < r["latency_ms"] < hi and hi / r["latency_ms"] == pytest.approx(1.09)
    assert "±9%" in r["uncertainty"] and len(r["kernel_detail"]) == r["kernels"]["n"]
    roof = costmodel.predict(p, "host", runtime="onnxruntime", calibration=cal, threads=1, kernel_model=False)
    assert roof["model"].startswith(costmodel.MODEL_NAME) and "error_band" not in roof
    # targets keep the roofline and its unvalidated uncertainty
    assert "error_band" not in costmodel.predict(p, "rpi4", runtime="onnxruntime", calibration=cal)


def test_kernel_factors_measured_on_this_kind_of_cpu_win_over_the_calibrations_own(tmp_path, monkeypatch):
    from edgeprune.bench import hostspec

    p = conv_bn_relu_res(tmp_path / "m.onnx")
    own = {"theta": {"conv": {"n": 1.0, "macs": 20.0}}, "run_us": 3.0,
           "heldout": {"n": 30, "median_abs_pct": 9.0, "p90_abs_pct": 20.0}}
    mine = {"theta": {"conv": {"n": 1.0, "macs": 40.0}}, "run_us": 3.0,
            "heldout": {"n": 30, "median_abs_pct": 3.0, "p90_abs_pct": 7.0},
            "note": "benchmarks/costmodel/predictor_v2.md (1 thread, batch 1)"}
    cal = dict(costmodel.load_calibration(None), fingerprint="another CPU", kernel_factors={"onnxruntime-fp32": own},
               kernel_factors_hosts={"this CPU": {"cpu": "This CPU", "factors": {"onnxruntime-fp32": mine}}})
    monkeypatch.setattr(hostspec, "fingerprint", lambda spec=None: "this CPU")
    r = costmodel.predict(p, "host", runtime="onnxruntime", calibration=cal, threads=1)
    assert r["error_band"]["p90_abs_pct"] == 7.0 and "calibrated on this host" in r["model"]
    assert "predictor_v2.md" in r["uncertainty"]
    monkeypatch.setattr(hostspec, "fingerprint", lambda spec=None: "a third CPU")
    r2 = costmodel.predict(p, "host", runtime="onnxruntime", calibration=cal, threads=1)
    assert r2["error_band"]["p90_abs_pct"] == 20.0 and "another host" in r2["model"]
    assert r2["latency_ms"] < r["latency_ms"]  # half the per-MAC cost


def test_report_shows_the_band():
    from edgeprune.report.build import band_label

    assert band_label({"error_band": {"p90_abs_pct": 8.6}}) == "±9%"
    assert band_label({"uncertainty": "unvalidated on the device; from a published benchmark: ±2x"}) == "±2x"
    assert band_label({}) is None


@pytest.mark.parametrize("name", ["predictor", "predictor_v2"])
def test_committed_kernel_calibration_matches_results(name):
    """Each committed predictor experiment is shipped in the packaged calibration for the CPU it was measured on
    (the calibration's own set, or that CPU's set in kernel_factors_hosts), with its held-out band."""
    root = Path(__file__).resolve().parents[1]
    res = json.loads((root / "benchmarks" / "costmodel" / f"{name}.json").read_text())
    cal = json.loads(costmodel.CALIBRATION_PATH.read_text())
    fp = res["machine"].get("fingerprint", cal["fingerprint"])  # results written before per-host sets: the own one
    factors = cal["kernel_factors"] if fp == cal["fingerprint"] else cal["kernel_factors_hosts"][fp]["factors"]
    assert set(factors) == set(res["summary"])
    for key, kf in factors.items():  # the shipped model per runtime: kernel-v2 or kernel-v1
        summary = res["summary"][key]  # (results written before kernel-v2 existed have one held-out band)
        band = summary["heldout_family_v1" if kf["model"] == kernels.MODEL_NAME and "heldout_family_v1" in summary
                       else "heldout_family"]
        assert kf["heldout"]["median_abs_pct"] == pytest.approx(band["median_abs_pct"])
        assert bool(kf.get("correction")) == (kf["model"] == kernels.MODEL_NAME_CORRECTED)
        assert kf["heldout"]["n"] >= 20  # every family held out once


def test_host_calibration_fits_kernel_factors_with_a_held_out_band(tmp_path):
    """`edgeprune calibrate --host` also fits the kernel predictor and measures its leave-one-family-out band
    (rows as hostcal.measure_suite leaves them; latencies made by known factors)."""
    from edgeprune.bench import hostcal

    truth = {"theta": {"conv": {"n": 1.0, "macs": 25.0, "bytes": 4.0}, "memory": {"n": 0.5, "bytes": 2.0}},
             "run_us": 5.0}
    rows = []
    # 4 models per family, so that every leave-one-family-out fit has more models than free factors (with 2 per
    # family the fit was underdetermined and its held-out error depended on the scipy release's NNLS solver)
    shapes = [(8, 8, 1), (16, 8, 3), (32, 8, 2), (8, 16, 4), (16, 16, 1), (32, 12, 2), (24, 12, 1), (8, 12, 2),
              (16, 12, 4), (24, 8, 3), (32, 16, 1), (12, 16, 2)]
    for i, (c, hw, n) in enumerate(shapes):
        p = conv_chain(tmp_path / f"m{i}.onnx", c, hw, n)
        us = kernels.predict_us(fusion.ort_kernels(p), truth)
        rows.append({"family": f"f{i % 3}", "artifacts": {"onnx": p}, "measured": {"onnx": {"p50_ms": us / 1e3}}})
    kf = hostcal.fit_kernel_factors(rows)
    assert set(kf) == {"onnxruntime-fp32"}
    band = kf["onnxruntime-fp32"]["heldout"]
    assert band["n"] == 12 and band["median_abs_pct"] < 2 and band["within_10_pct"] == 100


def _conv_kernel(cin, cout, hw, k=3):
    macs = cin * cout * k * k * hw * hw
    return fusion.Kernel(op="Conv", type="conv", macs=macs, in_bytes=4 * cin * hw * hw, out_bytes=4 * cout * hw * hw,
                         w_bytes=4 * cin * cout * k * k, cin=cin, cout=cout, k=k)


def _corrected_samples(linear, slow):
    """Single-conv micro-benchmarks timed as ``linear`` predicts, except that convs with fewer than 8 output
    channels (``slow``) run at twice their linear time: an efficiency effect the linear model cannot express."""
    rng = np.random.default_rng(1)
    out = []
    for _ in range(120):
        cin, cout, hw = int(rng.choice([4, 8, 16, 32])), int(rng.choice([2, 4, 6, 16, 32, 64])), int(rng.choice([7, 14, 28]))
        k = _conv_kernel(cin, cout, hw)
        t = kernels.predict_us([k], dict(linear, run_us=0.0))
        out.append(([k], linear["run_us"] + t * (slow if cout < 8 else 1.0)))
    return out


def test_correction_learns_a_shape_dependent_efficiency_and_is_neutral_without_one():
    linear = {"theta": {"conv": {"n": 1.0, "macs": 20.0}}, "run_us": 3.0}
    even = kernels.correction_table(_corrected_samples(linear, 1.0), linear)
    assert even is not None and len(even["y"]) == 120 and max(map(abs, even["y"])) < 1e-6
    narrow, wide = _conv_kernel(16, 4, 14), _conv_kernel(16, 32, 14)
    for k in (narrow, wide):  # nothing to learn: kernel-v2 equals the linear kernel-v1
        assert kernels.predict_us([k], dict(linear, correction=even)) == pytest.approx(kernels.predict_us([k], linear))
    table = kernels.correction_table(_corrected_samples(linear, 2.0), linear)
    params = dict(linear, correction=table)
    assert kernels.model_name(params) == "kernel-v2" and kernels.model_name(linear) == "kernel-v1"
    f_narrow, f_wide = kernels.efficiency_factors([narrow, wide], table)
    assert f_narrow == pytest.approx(2.0, rel=0.1) and f_wide == pytest.approx(1.0, rel=0.05)
    total, per = kernels.predict_us([narrow], params, detail=True)
    assert total == pytest.approx(3.0 + per[0][1]) and per[0][1] == pytest.approx(
        2 * kernels.predict_us([narrow], dict(linear, run_us=0.0)), rel=0.1)
    # too few single-kernel samples: no correction rather than a forest fitted on noise
    assert kernels.correction_table(_corrected_samples(linear, 2.0)[:5], linear) is None
    with pytest.raises(InputError, match="recalibrate"):
        kernels.efficiency_factors([narrow], dict(table, features=["other"], y=table["y"][:-1], x=table["x"][:-1]))
