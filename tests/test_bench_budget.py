"""check_budget with real numbers: pass/fail per line, source priority, and the advice it gives."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeprune.bench.budget import check_budget, evidence_from
from edgeprune.bench.costmodel import predict
from edgeprune.bench.host import measure_host
from edgeprune.errors import InputError

# rpi4 budget with a given flops_keep 0.5 (the profile itself derives its target since issue 20): p50 10 ms, p90 15 ms, memory 64 MB, size 16 MB, accuracy drop 2.0
GOOD = {
    "artifact": "tflite-int8",
    "latency_p50_ms": {"value": 6.0, "source": "measured", "where": "pi@rpi4"},
    "latency_p90_ms": {"value": 7.5, "source": "measured", "where": "pi@rpi4"},
    "peak_memory_mb": {"value": 12.0, "source": "predicted"},
    "model_size_mb": 1.1,
    "metric": 89.4, "dense_metric": 90.6,
    "macs": 40e6, "dense_macs": 81e6,
}


def _rpi4_keep_half():
    import dataclasses

    from edgeprune.targets import load_target

    t = load_target("rpi4")
    return dataclasses.replace(t, budget=dataclasses.replace(t.budget, flops_keep=0.5))


RPI4 = _rpi4_keep_half()


def _line(res, name):
    return next(ln for ln in res["lines"] if ln["name"] == name)


def test_all_pass():
    r = check_budget(RPI4, GOOD)
    assert r["passed"] is True and r["missing"] == [] and r["target"] == "rpi4"
    names = [ln["name"] for ln in r["lines"]]
    assert names == ["flops_keep", "latency_p50_ms", "latency_p90_ms", "peak_memory_mb", "model_size_mb",
                     "max_accuracy_drop"]
    p50 = _line(r, "latency_p50_ms")
    assert p50["source"] == "measured on device" and p50["margin"] == pytest.approx(0.4)
    assert _line(r, "max_accuracy_drop")["value"] == pytest.approx(1.2)
    assert _line(r, "flops_keep")["value"] == pytest.approx(40 / 81)


def test_latency_advice_uses_cost_model_breakdown():
    ev = dict(GOOD, latency_p50_ms={"value": 16.0, "source": "predicted"},
              latency_breakdown={"fixed_ms": 2.0, "scalable_ms": 14.0})
    ln = _line(check_budget(RPI4, ev), "latency_p50_ms")
    # keep = (10/16 - 2/16) / (14/16) = 0.571 -> ~43% fewer FLOPs; 0.571 * 40/81 = 0.28 of dense MACs
    assert ln["passed"] is False and ln["margin"] == pytest.approx(-0.6)
    assert "needs ~43% fewer FLOPs" in ln["advice"] and "12% of the time is per-op overhead" in ln["advice"]
    assert "keep <= 0.28 of the dense model's MACs" in ln["advice"]
    # without a breakdown latency is assumed proportional to FLOPs: 10/16 -> 38% fewer
    ev.pop("latency_breakdown")
    assert "needs ~38% fewer FLOPs" in _line(check_budget(RPI4, ev), "latency_p50_ms")["advice"]


def test_overhead_bound_latency():
    ev = dict(GOOD, latency_p50_ms={"value": 12.0, "source": "predicted"},
              latency_breakdown={"fixed_ms": 11.0, "scalable_ms": 1.0})
    ln = _line(check_budget(RPI4, ev), "latency_p50_ms")
    assert ln["passed"] is False and "per-operator overhead" in ln["advice"] and "fewer layers" in ln["advice"]


def test_source_priority():
    cands = [{"value": 3.0, "source": "measured", "where": "host"},
             {"value": 12.0, "source": "predicted"},
             {"value": 11.0, "source": "measured", "where": "pi@10.0.0.5"}]
    ln = _line(check_budget(RPI4, dict(GOOD, latency_p50_ms=cands)), "latency_p50_ms")
    assert ln["value"] == 11.0 and ln["source"] == "measured on device" and ln["where"] == "pi@10.0.0.5"
    ln = _line(check_budget(RPI4, dict(GOOD, latency_p50_ms=cands[:2])), "latency_p50_ms")
    assert ln["value"] == 12.0 and ln["source"] == "predicted"  # predicted beats a host measurement
    with pytest.raises(InputError, match="source"):
        check_budget(RPI4, dict(GOOD, latency_p50_ms={"value": 1.0, "source": "guessed"}))


def test_size_accuracy_flops_memory_advice():
    ev = dict(GOOD, artifact="tflite", model_size_mb=20.0, metric=87.0, macs=60e6,
              peak_memory_mb={"value": 80.0, "source": "measured", "where": "pi@rpi4"})
    r = check_budget(RPI4, ev)
    assert r["passed"] is False
    size = _line(r, "model_size_mb")
    assert size["passed"] is False and "use INT8" in size["advice"] and "5.0 MB" in size["advice"]
    acc = _line(r, "max_accuracy_drop")
    assert acc["passed"] is False and acc["value"] == pytest.approx(3.6)
    assert "prune less" in acc["advice"] and "fine-tune longer" in acc["advice"]
    fk = _line(r, "flops_keep")
    assert fk["passed"] is False and "prune more" in fk["advice"] and "0.74" in fk["advice"]
    mem = _line(r, "peak_memory_mb")
    assert mem["passed"] is False and "16.0 MB less" in mem["advice"] and "INT8" in mem["advice"]
    # already INT8 and still too big: prune
    ev2 = dict(GOOD, model_size_mb=32.0)
    assert "prune ~50% more parameters" in _line(check_budget(RPI4, ev2), "model_size_mb")["advice"]


def test_missing_evidence_fails():
    r = check_budget("android-mid", {"latency_p50_ms": {"value": 1.0, "source": "predicted"}})
    assert r["passed"] is False
    assert set(r["missing"]) == {"flops_keep", "latency_p90_ms", "peak_memory_mb", "model_size_mb",
                                 "max_accuracy_drop"}
    assert _line(r, "latency_p50_ms")["passed"] is True


def test_unbudgeted_lines_are_skipped(tmp_path):
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "edgeprune" / "targets" / "rpi4.toml"
    p = tmp_path / "b.toml"
    p.write_text(src.read_text().replace("model_size_mb = 16.0\n", "").replace("flops_keep = 0.5\n", ""))
    names = [ln["name"] for ln in check_budget(p, GOOD)["lines"]]
    assert "model_size_mb" not in names and "flops_keep" not in names


def test_end_to_end_with_real_measurement_and_prediction(tmp_path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((32, 1, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                           helper.make_node("Relu", ["c"], ["y"])], "m",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 28, 28])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    host = measure_host(path, runs=20, warmup=2, repeats=2)
    pred = predict(path, "jetson-nano")
    ev = evidence_from(measured=[host], prediction=pred, metric=90.0, dense_metric=91.0, dense_macs=2.5 * pred["macs"],
                       artifact="onnx")
    r = check_budget("jetson-nano", ev)
    p50 = _line(r, "latency_p50_ms")
    assert p50["source"] == "predicted" and p50["value"] == pred["latency_ms"]  # prediction beats host
    # p90 is predicted too (the p50 prediction times the host's measured tail ratio), never below p50
    p90 = _line(r, "latency_p90_ms")
    assert p90["source"] == "predicted" and p90["value"] >= p50["value"]
    assert p90["value"] == pred["latency_ms"] * max(1.0, host["p90_ms"] / host["p50_ms"])
    assert _line(r, "model_size_mb")["value"] == host["model_size_mb"]
    assert _line(r, "peak_memory_mb")["value"] == pred["peak_memory_mb"]  # the one predicted memory figure
    assert r["passed"] is True  # a 226k-MAC conv is far inside every jetson-nano budget


def test_int8_over_tolerance_fails_the_budget():
    """An INT8 artifact that loses more than export.int8_tolerance is a failing line, not a silent fp32 swap."""
    ev = dict(GOOD, int8={"metric_drop": 2.5, "tolerance": 1.0, "calib_samples": 256})
    r = check_budget(RPI4, ev)
    ln = _line(r, "int8_accuracy_drop")
    assert r["passed"] is False and ln["passed"] is False and ln["value"] == 2.5 and ln["budget"] == 1.0
    assert "calib_samples (now 256)" in ln["advice"] and "per-channel" in ln["advice"] and "fp32" in ln["advice"]
    ok = check_budget(RPI4, dict(GOOD, int8={"metric_drop": 0.3, "tolerance": 1.0, "calib_samples": 256}))
    assert ok["passed"] is True and _line(ok, "int8_accuracy_drop")["passed"] is True


def test_metric_mismatch_is_not_compared():
    ev = dict(GOOD, metric_mismatch="the artifact's metric (psnr) is not the dense model's (my.py:score)")
    r = check_budget(RPI4, ev)
    ln = _line(r, "max_accuracy_drop")
    assert ln["passed"] is None and ln["value"] is None and "psnr" in ln["advice"]
    assert r["passed"] is False and "max_accuracy_drop" in r["missing"]


def test_choose_artifact_keeps_the_preferred_int8(tmp_path):
    from edgeprune.stages.budget import choose_artifact, dense_metric
    from edgeprune.targets import load_target

    arts = {"tflite-int8": {"ok": True, "within_tolerance": False}, "tflite": {"ok": True}, "onnx": {"ok": True}}
    assert choose_artifact(load_target("rpi4"), arts) == "tflite-int8"
    assert choose_artifact(load_target("jetson-nano"), arts) == "onnx"
    assert choose_artifact(load_target("rpi4"), {"tflite-int8": {"ok": False}, "onnx": {"ok": True}}) == "onnx"
    assert dense_metric({"metric_name": "accuracy", "test_metric": 97.0}, {"metric_name": "accuracy"}) == (97.0, None)
    d, why = dense_metric({"metric_name": "f.py:score", "test_metric": 0.9}, {"metric_name": "accuracy"})
    assert d is None and "f.py:score" in why


def test_predicted_p90_uses_the_measured_tail():
    from edgeprune.bench.budget import predicted_p90

    pred = {"latency_ms": 2.0}
    host = {"p50_ms": 0.1, "p90_ms": 0.15, "where": "host"}
    dev = {"p50_ms": 1.0, "p90_ms": 1.2, "where": "pi@rpi"}
    v, how = predicted_p90(pred, [dev, host])  # the device's tail first
    assert v == pytest.approx(2.4) and "1.20" in how and "pi@rpi" in how
    assert predicted_p90(pred, [host])[0] == pytest.approx(3.0)
    assert predicted_p90(pred, [{"p50_ms": 1.0, "p90_ms": 0.9}])[0] == 2.0  # never below p50
    assert predicted_p90(pred, []) is None


def test_budget_stage_fingerprints_the_profile_content(tmp_path):
    """Editing a profile's budget (same name) changes the budget stage's dependencies: it re-checks."""
    from types import SimpleNamespace

    from edgeprune.stages import budget as stage
    from edgeprune.targets import load_target

    src = (Path(__file__).resolve().parents[1] / "edgeprune" / "targets" / "rpi4.toml").read_text()
    a, b = tmp_path / "a" / "rpi4x.toml", tmp_path / "b" / "rpi4x.toml"
    a.parent.mkdir()
    b.parent.mkdir()
    a.write_text(src.replace('name = "rpi4"', 'name = "rpi4x"'))
    b.write_text(src.replace('name = "rpi4"', 'name = "rpi4x"').replace("latency_p50_ms = 10.0", "latency_p50_ms = 9.0"))
    cfg = {"budget": {}, "export": {"int8_tolerance": 1.0}}
    da = stage.depends(SimpleNamespace(target=load_target(a), cfg=cfg))
    db = stage.depends(SimpleNamespace(target=load_target(b), cfg=cfg))
    same = stage.depends(SimpleNamespace(target=load_target(b), cfg=cfg))
    assert da != db and db == same
