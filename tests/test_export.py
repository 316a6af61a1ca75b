"""Export stage: real converters, real runtimes, real data (sklearn digits), no mocks.

edgeprune's four built-in classifier architectures (mlp, cnn, resnet, mobilenetv2), each
unpruned and pruned (compacted by an L1 plan, one residual branch dropped where there is
one), are trained for a few seconds on the 8x8 digits and exported once per module
(module-scoped fixtures) to all four formats plus the dynamic-batch ONNX model, and once
more to ONNX / ONNX INT8 at Jetson Nano's opset 13; the tests then check each artifact in
its own runtime. litert-torch conversions run in a child process (~8 s per model).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

from edgeprune.errors import ConfigError, EdgepruneError  # noqa: E402
from edgeprune.export import FILENAMES, FORMATS, FP32_REL_TOL, export_all, package_bundle  # noqa: E402
from edgeprune.export import core as export_core  # noqa: E402
from edgeprune.export._files import TMP_PREFIX  # noqa: E402
from edgeprune.export.bundle import bundle_formats  # noqa: E402
from edgeprune.export.core import DYNAMIC_ONNX  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# ~3 min on a shared 2-core host (measured once: 178 s for the 86 tests): 8 models x 4 formats
# (litert-torch in child processes), the opset-13 exports, failure cases, one jetson-nano build
pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- models

BUILTINS = ("mlp", "cnn", "resnet", "mobilenetv2")


class DetFeatureMLP(nn.Module):
    """Adds a 2x2 determinant feature: ONNX has Det, litert-torch has no lowering for
    aten._linalg_det (a real converter gap, checked against litert-torch 0.10.0)."""

    def __init__(self):
        super().__init__()
        self.mlp = _builtin("mlp")()
        self.w = nn.Parameter(torch.zeros(10))

    def forward(self, x):
        det = torch.linalg.det(x[:, :, :2, :2].reshape(-1, 2, 2))
        return self.mlp(x) + det.reshape(-1, 1) * self.w


class TriuFeatureMLP(nn.Module):
    """Feeds the upper triangle of each 8x8 image to an MLP: ONNX has Trilu only from opset 14,
    so the export at Jetson Nano's opset 13 fails (torch.onnx: aten::triu unsupported), while
    litert-torch lowers aten.triu (a real gap, checked against torch 2.13 / litert-torch 0.10)."""

    def __init__(self):
        super().__init__()
        self.mlp = _builtin("mlp")()

    def forward(self, x):
        return self.mlp(torch.triu(x))


def _builtin(name):
    from edgeprune.models import build_model

    return lambda: build_model(name, (1, 8, 8), 10)


def _pruned_builtin(name, keep=0.5):
    """A built-in model compacted by an L1 plan (and one residual branch dropped): the pruned case."""

    def make():
        from edgeprune.methods.base import uniform_widths
        from edgeprune.methods.magnitude import group_scores
        from edgeprune.models import build_model
        from edgeprune.surgery import analyze, compact, plan_from_scores

        torch.manual_seed(1)
        model = build_model(name, (1, 8, 8), 10).eval()
        example = torch.zeros(1, 1, 8, 8)
        graph = analyze(model, example)
        dropped = list(graph.branches)[:1]
        plan = plan_from_scores(graph, group_scores(model, graph), uniform_widths(graph, keep, 4, dropped),
                                width_multiple=4, dropped=dropped)
        return compact(model, plan, example, graph)

    return make


# the built-ins, unpruned and pruned
MODELS = {**{n: _builtin(n) for n in BUILTINS}, **{f"{n}-pruned": _pruned_builtin(n) for n in BUILTINS}}


# --------------------------------------------------------------------------- data / training


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Train, export and convert with one torch thread: on a shared 2-core host two threads
    contend so badly that training took ~100x longer (measured once here at load average ~4.5:
    the cnn's 5 epochs took 38.7 s with two threads, 3 epochs 0.3 s with one)."""
    before, env = torch.get_num_threads(), os.environ.get("EDGEPRUNE_EXPORT_THREADS")
    torch.set_num_threads(1)
    os.environ["EDGEPRUNE_EXPORT_THREADS"] = "1"  # the litert-torch child (tflite_worker)
    yield
    torch.set_num_threads(before)
    if env is None:
        os.environ.pop("EDGEPRUNE_EXPORT_THREADS", None)
    else:
        os.environ["EDGEPRUNE_EXPORT_THREADS"] = env


@pytest.fixture(scope="module")
def digits():
    d = sklearn_datasets.load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    train, test = idx[:1300], idx[1300:]
    return {"train_x": x[train], "train_y": y[train], "test_x": x[test], "test_y": y[test]}


def train(model, digits, epochs=5, reconstruction=False):
    torch.manual_seed(0)
    x, y = torch.from_numpy(digits["train_x"]), torch.from_numpy(digits["train_y"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2 if not reconstruction else 3e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            b = perm[i : i + 64]
            out = model(x[b])
            loss = nn.functional.mse_loss(out, x[b]) if reconstruction else nn.functional.cross_entropy(out, y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def run_export(model, digits, out_dir, formats=FORMATS, **kw):
    messages = []
    result = export_all(
        model,
        torch.from_numpy(digits["test_x"][:1]),
        calib=digits["train_x"][:256],
        test_x=digits["test_x"],
        test_y=digits["test_y"],
        out_dir=out_dir,
        formats=list(formats),
        progress=messages.append,
        **kw,
    )
    return result, messages


@pytest.fixture(scope="module")
def trained(digits):
    """name -> trained eval-mode model for every model in MODELS."""
    torch.manual_seed(0)
    return {name: train(make(), digits) for name, make in MODELS.items()}


@pytest.fixture(scope="module")
def exported(trained, digits, tmp_path_factory):
    """name -> (model, result, out_dir, progress messages): all four formats + the dynamic-batch ONNX."""
    out = {}
    for name, model in trained.items():
        d = tmp_path_factory.mktemp(f"export-{name}")
        result, messages = run_export(model, digits, d, dynamic_batch=True)
        out[name] = (model, result, d, messages)
    return out


@pytest.fixture(scope="module")
def exported_opset13(trained, digits, tmp_path_factory):
    """name -> (model, result, out_dir): ONNX and ONNX INT8 at opset 13 (Jetson Nano: TensorRT 8.2)."""
    out = {}
    for name, model in trained.items():
        d = tmp_path_factory.mktemp(f"export13-{name}")
        result, _ = run_export(model, digits, d, formats=["onnx", "onnx-int8"], opset=13, dynamic_batch=True,
                               int8_runtime="tensorrt")  # fmt: skip
        out[name] = (model, result, d)
    return out


def tmp_leftovers(d: Path):
    return [p.name for p in d.iterdir() if p.name.startswith(TMP_PREFIX) or ".tmp" in p.name or p.suffix == ".part"]


def torch_out(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def rel_diff(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - ref)) / np.max(np.abs(ref)))


# --------------------------------------------------------------------------- all formats, per model

params = pytest.mark.parametrize("name", list(MODELS))


def test_pruned_models_are_smaller(trained):
    """The pruned half of the matrix really is a different, smaller architecture."""
    from edgeprune.models import Residual

    for n in BUILTINS:
        dense, pruned = trained[n], trained[f"{n}-pruned"]
        assert sum(p.numel() for p in pruned.parameters()) < 0.75 * sum(p.numel() for p in dense.parameters()), n
        if any(isinstance(m, Residual) for m in dense.modules()):  # one residual branch was cut out
            assert sum(isinstance(m, Residual) for m in pruned.modules()) < sum(isinstance(m, Residual) for m in dense.modules())


@params
def test_all_formats_ok_and_written(exported, name):
    model, result, d, messages = exported[name]
    assert list(result) == list(FORMATS)
    for fmt, e in result.items():
        assert e["ok"], f"{name}/{fmt}: {e['error']}"
        assert e["error"] is None
        assert e["path"] == FILENAMES[fmt]
        assert (d / e["path"]).stat().st_size == e["size_bytes"] > 0
        assert e["n_test"] == 497 and e["metric_name"] == "accuracy"
        assert e["input_layout"] == "NCHW" and e["input_shape"] == [1, 1, 8, 8]
        assert e["runtime"].startswith("onnxruntime " if fmt.startswith("onnx") else "ai-edge-litert ")
        assert e["seconds"] > 0
    # the progress hook heard about every artifact
    for fmt in FORMATS:
        assert any(m.startswith(f"{fmt}:") for m in messages), messages
    assert model.training is False  # export_all restores the mode it found (eval here)
    summary = json.loads((d / "export.json").read_text())
    assert set(summary["artifacts"]) == set(FORMATS)
    over = [f for f in ("onnx-int8", "tflite-int8") if not result[f]["within_tolerance"]]
    assert [o["format"] for o in summary["int8_over_tolerance"]] == over


@params
def test_torch_model_learned(exported, name):
    _, result, _, _ = exported[name]
    assert result["onnx"]["torch_metric"] > 85.0


@params
def test_fp32_parity(exported, digits, name):
    model, result, d, _ = exported[name]
    for fmt in ("onnx", "tflite"):
        e = result[fmt]
        assert e["within_tolerance"] and e["quant"] is None and e["input_dtype"] == "float32"
        assert e["rel_diff"] <= FP32_REL_TOL, (fmt, e["rel_diff"])
        assert e["max_abs_diff"] < 1e-3
        assert abs(e["metric_drop"]) <= 0.25  # at most one near-tie flips
    # a single-file ONNX model (no external .data) with the batch fixed to 1
    assert not list(d.glob("*.data"))
    proto = onnx.load(str(d / "model.onnx"))
    dims = [x.dim_value for x in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, 8, 8]
    assert result["onnx"]["opset"] == 18 and result["onnx"]["details"]["exporter"] == "torch.onnx dynamo"
    # independent check in onnxruntime, sample by sample, against the torch model
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    x = digits["test_x"][:20]
    got = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i : i + 1]})[0] for i in range(len(x))])
    assert rel_diff(got, torch_out(model, x)) <= FP32_REL_TOL


@params
def test_dynamic_batch_onnx(exported, digits, name):
    """model.dynamic.onnx takes batch 1 and batch 7 in onnxruntime and gives torch's outputs."""
    model, result, d, _ = exported[name]
    dyn = result["onnx"]["dynamic_batch"]
    assert dyn["ok"], dyn["error"]
    assert dyn["path"] == DYNAMIC_ONNX and (d / DYNAMIC_ONNX).stat().st_size == dyn["size_bytes"]
    assert dyn["batches_checked"] == [497, 1, 7] and dyn["rel_diff"] <= FP32_REL_TOL
    sess = ort.InferenceSession(str(d / DYNAMIC_ONNX), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.shape == ["batch", 1, 8, 8]
    fixed = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    x = digits["test_x"][40:47]
    for n in (1, 7):
        y = sess.run(None, {inp.name: x[:n]})[0]
        assert y.shape == (n, 10)
        assert rel_diff(y, torch_out(model, x[:n])) <= FP32_REL_TOL
    # batch 7 at once == 7 runs of the fixed batch-1 model
    one_by_one = np.concatenate([fixed.run(None, {fixed.get_inputs()[0].name: x[i : i + 1]})[0] for i in range(7)])
    np.testing.assert_allclose(sess.run(None, {inp.name: x})[0], one_by_one, rtol=1e-5, atol=1e-5)


@params
def test_onnx_int8_is_integer(exported, name):
    _, result, d, _ = exported[name]
    check_qdq(d / "model.int8.onnx", result["onnx-int8"])


def check_qdq(path: Path, entry: dict) -> None:
    """Every Conv/Gemm/MatMul weight in the QDQ graph is an int8 initializer with per-channel scales."""
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = {t.name: t for t in proto.graph.initializer}
    float_weights = [t.name for t in inits.values() if len(t.dims) >= 2 and t.data_type == onnx.TensorProto.FLOAT]
    assert float_weights == []
    # every Conv/Gemm/MatMul weight comes out of a DequantizeLinear fed by an int8 initializer
    producers = {o: n for n in proto.graph.node for o in n.output}
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            dq = producers.get(node.input[1])
            assert dq is not None and dq.op_type == "DequantizeLinear", node.name
            assert inits[dq.input[0]].data_type == onnx.TensorProto.INT8, node.name
    # every weight DequantizeLinear reads int8 with per-channel scales on some conv/gemm
    per_channel = [
        n for n in proto.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and len(inits[n.input[1]].dims) == 1
    ]  # fmt: skip
    assert per_channel
    assert entry["details"]["int8"]["int8_initializers"] >= len(per_channel)


@params
def test_tflite_int8_is_integer(exported, digits, name):
    from ai_edge_litert.interpreter import Interpreter

    _, result, d, _ = exported[name]
    e = result["tflite-int8"]
    it = Interpreter(model_path=str(d / "model.int8.tflite"))
    it.allocate_tensors()
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    assert list(inp["shape"]) == [1, 1, 8, 8]
    floats = [t["name"] for t in it.get_tensor_details() if np.dtype(t["dtype"]).kind == "f"]
    assert floats == []
    assert e["input_dtype"] == "int8"
    q = e["quant"]
    assert q["input_scale"] == pytest.approx(inp["quantization"][0]) and q["input_zero_point"] == inp["quantization"][1]
    assert q["output_scale"] == pytest.approx(out["quantization"][0])
    assert q["output_zero_point"] == out["quantization"][1]
    # plain min/max calibration: the input range is exactly [min(calib, 0), max(calib, 0)] over 256 int8 steps
    calib = digits["train_x"][:256]
    lo, hi = min(float(calib.min()), 0.0), max(float(calib.max()), 0.0)
    assert q["input_scale"] == pytest.approx((hi - lo) / 255, rel=1e-6)
    assert q["input_zero_point"] == round(-128 - lo / q["input_scale"])
    assert "MinMaxObserver" in e["details"]["quantizer"] and "Histogram" not in e["details"]["quantizer"]


@params
def test_int8_accuracy_close_to_torch(exported, name):
    _, result, _, _ = exported[name]
    for fmt in ("onnx-int8", "tflite-int8"):
        e = result[fmt]
        assert e["metric_drop"] <= 3.0, (fmt, e["metric"], e["torch_metric"])
        assert e["within_tolerance"] == (e["metric_drop"] <= 1.0)
        assert 0 < e["rel_diff"] < 0.2  # really quantized, but not broken


@params
def test_no_temp_files_left(exported, name):
    _, _, d, _ = exported[name]
    assert tmp_leftovers(d) == []
    assert sorted(p.name for p in d.iterdir()) == sorted([*FILENAMES.values(), DYNAMIC_ONNX, "export.json"])


@params
def test_opset13_parity_and_int8(exported_opset13, digits, name):
    """Jetson Nano's opset 13 goes through the TorchScript exporter: same parity, same integer QDQ graph."""
    model, result, d = exported_opset13[name]
    e = result["onnx"]
    assert e["ok"], e["error"]
    assert e["opset"] == 13 and e["details"]["exporter"] == "torch.onnx torchscript"
    assert e["rel_diff"] <= FP32_REL_TOL and abs(e["metric_drop"]) <= 0.25
    for f in ("model.onnx", "model.int8.onnx", DYNAMIC_ONNX):
        proto = onnx.load(str(d / f))
        assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [13], f
    x = digits["test_x"]
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i : i + 1]})[0] for i in range(len(x))])
    assert rel_diff(got, torch_out(model, x)) <= FP32_REL_TOL
    dyn = ort.InferenceSession(str(d / DYNAMIC_ONNX), providers=["CPUExecutionProvider"])
    assert rel_diff(dyn.run(None, {dyn.get_inputs()[0].name: x[:7]})[0], torch_out(model, x[:7])) <= FP32_REL_TOL
    q = result["onnx-int8"]
    assert q["ok"] and q["opset"] == 13 and q["metric_drop"] <= 3.0, (q["error"], q["metric_drop"])
    check_qdq(d / "model.int8.onnx", q)
    # quantized for TensorRT (Jetson Nano): symmetric int8 activations, every zero point 0; not timed here
    assert q["details"]["int8_scheme"]["runtime"] == "tensorrt"
    assert set(activation_zero_points(d / "model.int8.onnx")) == {(onnx.TensorProto.INT8, 0)}
    choice = json.loads((d / "export.json").read_text())["runtime_choice"]["onnxruntime"]
    assert choice["speed"] is None and "tensorrt" in choice["reason"]


def activation_zero_points(path: Path) -> list[tuple[int, int]]:
    """(dtype, value) of every QuantizeLinear's zero point (activations: weights are stored quantized)."""
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    inits = {t.name: t for t in proto.graph.initializer}
    zps = [inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    return sorted({(z.data_type, int(v)) for z in zps for v in numpy_helper.to_array(z).ravel()})


@params
def test_onnx_int8_for_onnxruntime_is_u8s8_and_fuses(exported, name, tmp_path):
    """model.int8.onnx for onnxruntime: uint8 activations, and onnxruntime's own (portable, EXTENDED)
    optimiser turns every Conv/Gemm into an integer kernel. The previous scheme (symmetric int8
    activations) left most Convs float between Q/DQ pairs and ran slower than fp32 on x86."""
    _, result, d, _ = exported[name]
    assert result["onnx-int8"]["details"]["int8_scheme"]["runtime"] == "onnxruntime"
    assert {dt for dt, _ in activation_zero_points(d / "model.int8.onnx")} == {onnx.TensorProto.UINT8}
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(d / "model.int8.onnx"), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert not {"Conv", "Gemm", "MatMul"} & set(ops), sorted(ops)
    assert {"QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger"} & set(ops), sorted(ops)


@params
def test_int8_speed_checked_and_choice_recorded(exported, name):
    """Each runtime's INT8 artifact was timed against its fp32 one at export, and export.json says which
    one the build prefers, from that measurement."""
    from edgeprune.export.speedcheck import PAIRS

    _, result, d, _ = exported[name]
    choice = json.loads((d / "export.json").read_text())["runtime_choice"]
    assert set(choice) == set(PAIRS)
    for runtime, (fp32, int8) in PAIRS.items():
        c, s = choice[runtime], choice[runtime]["speed"]
        assert s["threads"] == 1 and s["fp32_p50_us"] > 0 and s["int8_p50_us"] > 0 and s["rounds"] >= 3
        assert c["prefer"] == (int8 if s["int8_over_fp32"] < 1.0 else fp32), c
        assert f"{s['int8_over_fp32']:.2f}x" in c["reason"]
        assert result[int8]["details"]["speed_vs_fp32"] == s


def test_artifact_order_prefers_fp32_only_where_int8_was_slower():
    from edgeprune.export.speedcheck import artifact_order, runtime_choice

    slow = {"int8_over_fp32": 1.3, "cpu": "cpu", "threads": 1}
    fast = dict(slow, int8_over_fp32=0.5)
    c = {"onnxruntime": runtime_choice("onnxruntime", slow, True, True),
         "tflite": runtime_choice("tflite", fast, True, True)}  # fmt: skip
    assert c["onnxruntime"]["prefer"] == "onnx" and "NOT faster" in c["onnxruntime"]["reason"]
    assert c["tflite"]["prefer"] == "tflite-int8"
    order = ["tflite-int8", "tflite", "onnx-int8", "onnx"]
    assert artifact_order(order, c) == ["tflite-int8", "tflite", "onnx", "onnx-int8"]
    assert artifact_order(["onnx", "onnx-int8"], c) == ["onnx", "onnx-int8"]  # fp32 already first
    assert artifact_order(order, None) == order
    assert runtime_choice("tflite", None, True, False)["prefer"] == "tflite"  # INT8 failed: fp32


# --------------------------------------------------------------------------- failures


def test_unsupported_op_fails_only_that_artifact(digits, tmp_path):
    model = train(DetFeatureMLP(), digits, epochs=2)
    result, _ = run_export(model, digits, tmp_path, formats=["onnx", "onnx-int8", "tflite"])
    assert result["onnx"]["ok"] and result["onnx-int8"]["ok"], (result["onnx"]["error"], result["onnx-int8"]["error"])
    for fmt in ("tflite",):
        e = result[fmt]
        assert e["ok"] is False and e["within_tolerance"] is False and e["path"] is None
        assert "linalg_det" in e["error"], e["error"]
        assert "\n" not in e["error"]
        assert not (tmp_path / FILENAMES[fmt]).exists()
    assert (tmp_path / export_core.TFLITE_LOG).is_file()  # the converter's full log is kept
    assert tmp_leftovers(tmp_path) == []


def test_onnx_failure_leaves_tflite_intact(digits, tmp_path):
    """A real ONNX exporter failure (aten::triu at opset 13) fails ONNX and ONNX INT8 only."""
    model = train(TriuFeatureMLP(), digits, epochs=2)
    (tmp_path / "model.onnx").write_bytes(b"stale model from an older export")
    result, _ = run_export(model, digits, tmp_path, formats=["onnx", "onnx-int8", "tflite", "tflite-int8"], opset=13)
    e = result["onnx"]
    assert not e["ok"] and e["path"] is None and "triu" in e["error"] and "opset version 13" in e["error"], e["error"]
    assert not result["onnx-int8"]["ok"] and "needs the fp32 ONNX model" in result["onnx-int8"]["error"]
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "model.int8.onnx").exists()
    for fmt in ("tflite", "tflite-int8"):
        assert result[fmt]["ok"], result[fmt]["error"]
        assert (tmp_path / FILENAMES[fmt]).stat().st_size == result[fmt]["size_bytes"]
    assert result["tflite"]["rel_diff"] <= FP32_REL_TOL
    summary = json.loads((tmp_path / "export.json").read_text())
    assert [f for f, a in summary["artifacts"].items() if not a["ok"]] == ["onnx", "onnx-int8"]
    assert tmp_leftovers(tmp_path) == []


def test_converter_timeout_is_per_artifact(digits, tmp_path, monkeypatch):
    """A converter that does not finish is killed; the ONNX artifacts are unaffected."""
    monkeypatch.setattr(export_core, "TFLITE_TIMEOUT_S", 0.5)
    model = train(_builtin("mlp")(), digits, epochs=1)
    result, _ = run_export(model, digits, tmp_path, formats=["tflite", "onnx"])
    assert result["onnx"]["ok"]
    assert not result["tflite"]["ok"] and "timed out" in result["tflite"]["error"]
    assert not (tmp_path / "model.tflite").exists()
    assert tmp_leftovers(tmp_path) == []


def test_fp32_parity_failure_is_reported(digits, tmp_path, monkeypatch):
    """A parity threshold no float artifact can meet turns into ok=False with the numbers."""
    # below zero: even a bit-exact export (difference 0.0, as onnxruntime often gives) fails the check
    monkeypatch.setattr(export_core, "FP32_REL_TOL", -1.0)
    model = train(_builtin("mlp")(), digits, epochs=1)
    result, _ = run_export(model, digits, tmp_path, formats=["onnx"], dynamic_batch=True)
    e = result["onnx"]
    assert not e["ok"] and "parity failure" in e["error"] and e["path"] is None
    assert not (tmp_path / "model.onnx").exists()
    dyn = e["dynamic_batch"]
    assert not dyn["ok"] and "parity failure" in dyn["error"] and not (tmp_path / DYNAMIC_ONNX).exists()


def test_killed_export_leaves_no_partial_model(tmp_path):
    """SIGKILL the whole export mid-way: any model file under a final name is complete, and
    the next export clears the scratch files."""
    script = textwrap.dedent(
        """
        import sys, numpy as np, torch
        from pathlib import Path
        from edgeprune.export import export_all
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(512, 10))
        x = np.random.default_rng(0).random((64, 1, 8, 8), dtype=np.float32)
        y = np.zeros(64, dtype=np.int64)
        print("go", flush=True)
        export_all(m, torch.from_numpy(x[:1]), calib=x, test_x=x, test_y=y, out_dir=Path(sys.argv[1]),
                   formats=["tflite", "tflite-int8", "onnx", "onnx-int8"], dynamic_batch=True)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == b"go"
    time.sleep(3.0)  # inside the exports (torch/onnx done or running, litert child converting)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    for p in tmp_path.iterdir():
        if p.name.endswith(".onnx"):
            onnx.checker.check_model(str(p))
        elif p.name.endswith(".tflite"):
            from ai_edge_litert.interpreter import Interpreter

            Interpreter(model_path=str(p)).allocate_tensors()
    # a later export into the same folder removes what the killed one left
    model = _builtin("mlp")().eval()
    digits_like = np.random.default_rng(1).random((8, 1, 8, 8), dtype=np.float32)
    export_all(model, torch.from_numpy(digits_like[:1]), calib=digits_like, test_x=digits_like,
               test_y=np.zeros(8, dtype=np.int64), out_dir=tmp_path, formats=["onnx"])  # fmt: skip
    assert tmp_leftovers(tmp_path) == []
    assert not (tmp_path / DYNAMIC_ONNX).exists()  # not asked for this time: an older one would not match


# --------------------------------------------------------------------------- options


def test_opset_and_int8_budget(digits, tmp_path):
    model = train(_builtin("mlp")(), digits, epochs=2)
    result, _ = run_export(model, digits, tmp_path, formats=["onnx", "onnx-int8"], opset=17, int8_tolerance=-100.0)
    assert result["onnx"]["ok"] and result["onnx"]["opset"] == 17
    proto = onnx.load(str(tmp_path / "model.onnx"))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    e = result["onnx-int8"]
    assert e["ok"] and e["within_tolerance"] is False  # over budget is reported, not raised
    over = json.loads((tmp_path / "export.json").read_text())["int8_over_tolerance"]
    assert over == [{"format": "onnx-int8", "metric_name": "accuracy", "metric": e["metric"],
                     "torch_metric": e["torch_metric"], "metric_drop": e["metric_drop"], "tolerance": -100.0}]  # fmt: skip


def test_reconstruction_task_uses_psnr(digits, tmp_path):
    model = train(_builtin_autoencoder(), digits, epochs=3, reconstruction=True)
    result, _ = run_export(model, digits, tmp_path, formats=["onnx", "onnx-int8"], task="reconstruction")
    for e in result.values():
        assert e["ok"] and e["metric_name"] == "psnr" and e["output_shape"] == [1, 1, 8, 8]
        assert e["torch_metric"] > 10.0
    assert abs(result["onnx"]["metric_drop"]) < 0.01
    assert result["onnx-int8"]["metric_drop"] < 3.0


def _builtin_autoencoder():
    from edgeprune.models import build_model

    return build_model("autoencoder", (1, 8, 8), 0)


def test_bad_requests(digits, tmp_path):
    with pytest.raises(ConfigError):
        run_export(_builtin("mlp")().eval(), digits, tmp_path, formats=["onnx", "coreml"])
    with pytest.raises(EdgepruneError):
        export_all(_builtin("mlp")().eval(), torch.zeros(2, 1, 8, 8), calib=digits["train_x"][:4],
                   test_x=digits["test_x"], test_y=digits["test_y"], out_dir=tmp_path, formats=["onnx"])  # fmt: skip


# --------------------------------------------------------------------------- bundles


CLASS_NAMES = [f"digit-{i}" for i in range(10)]
TARGET_ORDER = {  # runtime.artifacts of one target per platform (edgeprune/targets/*.toml)
    "android": ["tflite-int8", "tflite", "onnx-int8", "onnx"],
    "rpi": ["tflite-int8", "tflite", "onnx", "onnx-int8"],
    "jetson": ["onnx", "onnx-int8", "tflite", "tflite-int8"],
}


def bundle_meta():
    return {"class_names": CLASS_NAMES, "mean": 0.0, "std": 1.0, "source_run": "runs/test", "budget": {"ok": True}}


def test_bundle_formats_follow_platform_and_target_order():
    from edgeprune.targets import load_target

    for name in ("rpi4", "jetson-nano", "android-mid"):
        t = load_target(name)
        assert bundle_formats(t.platform, t.artifacts) == {
            "rpi": ["tflite-int8", "tflite", "onnx"], "jetson": ["onnx", "onnx-int8"], "android": ["tflite-int8", "tflite"],
        }[t.platform], name  # fmt: skip
    assert bundle_formats("rpi", ["onnx", "tflite"]) == ["onnx", "tflite"]  # the target's order wins


def test_bundle_android(exported, tmp_path):
    _, result, d, _ = exported["cnn"]
    dist = package_bundle(tmp_path / "dist", target_name="pixel-8", platform="android", artifacts=result,
                          metadata=bundle_meta(), out_dir=d, preference=TARGET_ORDER["android"])  # fmt: skip
    names = sorted(p.name for p in dist.iterdir())
    assert names == sorted(["model.int8.tflite", "model.tflite", "metadata.json", "labels.txt", "ModelRunner.kt",
                            "ModelRunner.swift", "README.md"])  # fmt: skip
    meta = json.loads((dist / "metadata.json").read_text())
    assert meta["platform"] == "android" and meta["target"] == "pixel-8"
    assert meta["source_run"] == "runs/test" and meta["budget"] == {"ok": True}
    assert meta["input"]["shape"] == [1, 1, 8, 8] and meta["input"]["layout"] == "NCHW"
    assert "dtype" not in meta["input"] and "quantization" not in meta["input"]  # per model, not global
    assert meta["class_names"] == CLASS_NAMES
    assert (dist / "labels.txt").read_text().splitlines() == CLASS_NAMES
    by_file = {m["file"]: m for m in meta["models"]}
    q = result["tflite-int8"]["quant"]
    int8 = by_file["model.int8.tflite"]
    assert int8["precision"] == "int8" and int8["input"]["dtype"] == "int8" and int8["output"]["dtype"] == "int8"
    assert int8["input"]["quantization"]["scale"] == q["input_scale"]
    assert int8["input"]["quantization"]["zero_point"] == q["input_zero_point"]
    assert int8["output"]["quantization"] == {"scale": q["output_scale"], "zero_point": q["output_zero_point"],
                                              "formula": "real = (q - zero_point) * scale"}  # fmt: skip
    fp32 = by_file["model.tflite"]
    assert fp32["input"] == {"dtype": "float32", "shape": [1, 1, 8, 8], "quantization": None}
    assert fp32["output"] == {"dtype": "float32", "shape": [1, 10], "quantization": None}
    from edgeprune.export.tflite_metadata import read_model_metadata  # the exported model plus TFLite Metadata

    assert read_model_metadata((d / "model.int8.tflite").read_bytes()) == (None, {})
    md, packed = read_model_metadata((dist / "model.int8.tflite").read_bytes())
    assert md["author"] == "edgeprune" and packed == {"labels.txt": (dist / "labels.txt").read_bytes()}
    primary = meta["primary_model"]
    assert primary == ("model.int8.tflite" if result["tflite-int8"]["within_tolerance"] else "model.tflite")
    assert [m["file"] for m in meta["models"] if m["primary"]] == [primary]
    kt = (dist / "ModelRunner.kt").read_text()
    assert "import org.tensorflow.lite.Interpreter" in kt and f'MODEL_FILE = "{primary}"' in kt
    assert "(raw[i] * INPUT_SCALE - MEAN[c]) / STD[c]" in kt and "const val INPUT_SCALE = 1.0f" in kt
    if primary == "model.int8.tflite":
        import re

        scale = float(re.search(r"const val IN_SCALE = ([0-9.eE+-]+)f", kt).group(1))
        assert scale == pytest.approx(q["input_scale"], rel=1e-7)
        zp = int(re.search(r"const val IN_ZERO_POINT = (-?[0-9]+)", kt).group(1))
        assert zp == q["input_zero_point"]
        out_scale = float(re.search(r"const val OUT_SCALE = ([0-9.eE+-]+)f", kt).group(1))
        assert out_scale == pytest.approx(q["output_scale"], rel=1e-7)
    assert tmp_leftovers(tmp_path) == []


def _run_infer(dist: Path, sample: np.ndarray, model: str | None = None) -> dict:
    np.save(dist / "sample.npy", sample)
    cmd = [sys.executable, str(dist / "infer.py"), str(dist / "sample.npy")] + (["--model", model] if model else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=dist, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bundle_jetson_and_rpi_run(exported, digits, tmp_path):
    model, result, d, _ = exported["resnet-pruned"]
    sample = digits["test_x"][3]
    with torch.no_grad():
        expected = int(model(torch.from_numpy(sample[None])).argmax())

    jet = package_bundle(tmp_path / "jetson", target_name="jetson-nano", platform="jetson", artifacts=result,
                         metadata=bundle_meta(), out_dir=d, preference=TARGET_ORDER["jetson"])  # fmt: skip
    names = {p.name for p in jet.iterdir()}
    assert names == {"model.onnx", DYNAMIC_ONNX, "model.int8.onnx", "metadata.json", "labels.txt", "infer.py",
                     "build_engine.sh", "README.md"}  # fmt: skip
    sh = (jet / "build_engine.sh").read_text()
    assert "trtexec" in sh and "--onnx=model.onnx" in sh and "--saveEngine=" in sh and "--int8" in sh
    assert f"--onnx={DYNAMIC_ONNX}" in sh and "--minShapes=" in sh
    meta = json.loads((jet / "metadata.json").read_text())
    assert meta["primary_model"] == "model.onnx"
    assert [(m["file"], m["batch"]) for m in meta["models"]] == [("model.onnx", 1), (DYNAMIC_ONNX, "dynamic"),
                                                                 ("model.int8.onnx", 1)]  # fmt: skip
    dyn = meta["models"][1]
    assert dyn["input"]["shape"] == ["batch", 1, 8, 8] and dyn["batches_checked"] == [497, 1, 7]
    int8 = meta["models"][2]
    assert int8["precision"] == "int8" and int8["input"]["dtype"] == "float32" and int8["input"]["quantization"] is None
    assert meta["skipped"] == []
    assert _run_infer(jet, sample)["index"] == expected
    assert _run_infer(jet, sample, DYNAMIC_ONNX)["index"] == expected

    rpi = package_bundle(tmp_path / "rpi", target_name="pi-5", platform="rpi", artifacts=result,
                         metadata=bundle_meta(), out_dir=d, preference=TARGET_ORDER["rpi"])  # fmt: skip
    meta = json.loads((rpi / "metadata.json").read_text())
    assert [m["file"] for m in meta["models"]] == ["model.int8.tflite", "model.tflite", "model.onnx", DYNAMIC_ONNX]
    assert not (rpi / "model.int8.onnx").exists()
    for model_file in ("model.tflite", "model.int8.tflite", "model.onnx"):
        got = _run_infer(rpi, sample, model_file)
        assert got["index"] == expected and got["top1"] == CLASS_NAMES[expected]


def test_bundle_applies_the_recorded_preprocessing_to_raw_input(exported, digits, tmp_path):
    """A device feeds raw values as stored (digits: counts 0-16): the bundle scales and normalizes them."""
    model, result, d, _ = exported["cnn"]
    scale, mean, std = 1 / 16, 0.3, 0.4
    x = digits["test_x"][5]
    raw = (x * std + mean) / scale  # what the camera / file holds before the training pipeline's steps
    with torch.no_grad():
        expected = model(torch.from_numpy(x[None])).numpy()[0]
    meta_in = dict(bundle_meta(), mean=mean, std=std,
                   preprocessing={"input_scale": scale, "mean": mean, "std": std, "color_mode": "L", "resize": [8, 8],
                                  "resample": "bilinear", "formula": "x = (raw * input_scale - mean) / std"})
    dist = package_bundle(tmp_path / "rpi", target_name="pi-5", platform="rpi", artifacts=result, metadata=meta_in,
                          out_dir=d, preference=TARGET_ORDER["rpi"])  # fmt: skip
    meta = json.loads((dist / "metadata.json").read_text())
    assert meta["input"]["normalization"]["input_scale"] == scale
    assert meta["input"]["preprocessing"] == {"input_scale": scale, "color_mode": "L", "resize": [8, 8],
                                              "resample": "bilinear"}
    assert "resize to 8x8 (bilinear)" in (dist / "README.md").read_text()
    got = _run_infer(dist, raw.astype(np.float32), "model.tflite")
    assert got["index"] == int(expected.argmax())

    # an image file: infer.py converts it to the recorded colour mode and size, then scales and normalizes
    from PIL import Image

    pixels = np.clip(np.round((x[0] * std + mean) * 255), 0, 255).astype(np.uint8)  # the 8x8 grey image
    Image.fromarray(pixels, mode="L").convert("RGB").resize((16, 16), Image.NEAREST).save(dist / "digit.png")
    meta_img = dict(meta_in, preprocessing=dict(meta_in["preprocessing"], input_scale=1 / 255))
    dist2 = package_bundle(tmp_path / "rpi-img", target_name="pi-5", platform="rpi", artifacts=result,
                           metadata=meta_img, out_dir=d, preference=TARGET_ORDER["rpi"])  # fmt: skip
    (dist / "digit.png").rename(dist2 / "digit.png")
    want = Image.fromarray(pixels, mode="L").convert("RGB").resize((16, 16), Image.NEAREST).convert("L")
    want = want.resize((8, 8), Image.BILINEAR)
    xin = ((np.asarray(want, np.float32) / 255 - mean) / std)[None, None]
    with torch.no_grad():
        expected_img = int(model(torch.from_numpy(xin)).argmax())
    cmd = [sys.executable, str(dist2 / "infer.py"), str(dist2 / "digit.png"), "--model", "model.tflite"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=dist2, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1])["index"] == expected_img


def test_bundle_skips_failed_and_refuses_nothing(exported, tmp_path):
    _, result, d, _ = exported["mlp"]
    broken = {**result, "tflite-int8": {**result["tflite-int8"], "ok": False, "error": "converter said no"}}
    dist = package_bundle(tmp_path / "a", target_name="t", platform="android", artifacts=broken,
                          metadata={}, out_dir=d)  # fmt: skip
    meta = json.loads((dist / "metadata.json").read_text())
    assert [m["file"] for m in meta["models"]] == ["model.tflite"]
    assert meta["skipped"] == [{"format": "tflite-int8", "error": "converter said no"}]
    # the budget stage's choice wins, and an explicit format list is honoured
    dist = package_bundle(tmp_path / "c", target_name="t", platform="rpi", artifacts=result, out_dir=d,
                          metadata={"preferred_artifact": "tflite"}, formats=["tflite-int8", "tflite"])  # fmt: skip
    meta = json.loads((dist / "metadata.json").read_text())
    assert meta["primary_model"] == "model.tflite" and meta["preferred_artifact"] == "tflite"
    assert sorted(p.name for p in dist.glob("model.*")) == ["model.int8.tflite", "model.tflite"]
    # the artifact the budget was checked on ships even where the platform would not take it
    dist = package_bundle(tmp_path / "d", target_name="t", platform="jetson", artifacts=result, out_dir=d,
                          metadata={"preferred_artifact": "tflite"})  # fmt: skip
    meta = json.loads((dist / "metadata.json").read_text())
    assert meta["primary_model"] == "model.tflite"
    assert [m["file"] for m in meta["models"]] == ["model.tflite", "model.onnx", DYNAMIC_ONNX, "model.int8.onnx"]
    with pytest.raises(EdgepruneError):
        package_bundle(tmp_path / "b", target_name="t", platform="android",
                       artifacts={"onnx": result["onnx"]}, metadata={}, out_dir=d)  # fmt: skip


# --------------------------------------------------------------------------- the stages, through the CLI


def test_jetson_build_bundles_onnx_with_budget_lines(tmp_path):
    """`edgeprune build --target jetson-nano`: opset 13, TFLite exported but not bundled, the budget
    lines in metadata.json, and an INT8 artifact over its tolerance warned about and recorded."""
    from .conftest import run_cli

    cfg = tmp_path / "edgeprune.toml"
    cfg.write_text("[export]\nint8_tolerance = -100.0\n[bench]\nruns = 5\nwarmup = 1\nrepeats = 1\n")
    p = run_cli("build", "--config", cfg, "--target", "jetson-nano", "--model", "mlp", "--method", "l1",
                "--epochs", "2", "--finetune-epochs", "1", "--formats", "onnx,onnx-int8,tflite", "--output", tmp_path)
    assert p.returncode in (0, 3), p.stderr[-3000:]  # exported completely; the budget verdict is not under test
    run = tmp_path / "jetson-nano-mlp-l1"
    exp = json.loads((run / "export.json").read_text())
    assert exp["complete"] and exp["artifacts"]["onnx"]["opset"] == 13 and exp["artifacts"]["tflite"]["ok"]
    assert [o["format"] for o in exp["int8_over_tolerance"]] == ["onnx-int8"]
    stderr = " ".join(p.stderr.split())  # the console may wrap long warnings
    assert "onnx-int8 loses" in stderr and "over the INT8 tolerance of -100" in stderr
    dist = run / "dist" / "jetson-nano"
    assert sorted(f.name for f in dist.glob("model.*")) == ["model.int8.onnx", "model.onnx"]
    meta = json.loads((dist / "metadata.json").read_text())
    verdict = json.loads((run / "budget" / "jetson-nano.json").read_text())
    assert meta["budget"]["passed"] == verdict["passed"] and meta["budget"]["artifact"] == verdict["artifact"] == "onnx"
    assert meta["budget"]["file"] == "budget/jetson-nano.json"
    assert meta["budget"]["lines"] == [{k: ln[k] for k in ("name", "value", "budget", "source", "passed")}
                                       for ln in verdict["lines"]] and verdict["lines"]  # fmt: skip
    assert meta["int8_over_tolerance"] == exp["int8_over_tolerance"]
    assert "## Budget" in (dist / "README.md").read_text()


def test_reduce_range_wherever_an_x86_cpu_without_vnni_runs_the_artifact(monkeypatch):
    """7-bit weights where a non-VNNI x86 CPU runs the INT8 artifact: an x86 target, or this machine, whose
    onnxruntime check of an ARM or TensorRT artifact would otherwise saturate (on an AVX2-only EPYC the digits
    models lost 4-25 points in the check with 8-bit weights)."""
    from edgeprune.export import onnx_export as ox

    monkeypatch.setattr(ox.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(ox, "cpu_flags", lambda: {"avx2", "fma"})
    for runtime, x86 in (("onnxruntime", False), ("onnxruntime", True), ("tensorrt", False)):
        rr, why = ox.reduce_range_for(runtime, x86)
        assert rr and "VNNI" in why, (runtime, x86)
    monkeypatch.setattr(ox, "cpu_flags", lambda: {"avx2", "avx512_vnni"})
    assert ox.reduce_range_for("onnxruntime", False)[0] is False
    assert ox.reduce_range_for("onnxruntime", True)[0] is False
    assert ox.reduce_range_for("tensorrt", False)[0] is False
    monkeypatch.setattr(ox.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(ox, "cpu_flags", lambda: {"asimd"})
    assert ox.reduce_range_for("onnxruntime", False)[0] is False
