"""Export stage: real converters, real runtimes, real data (sklearn digits), no mocks.

Four small architectures are trained for a few seconds on the 8x8 digits and exported to all
four formats once (module-scoped fixtures); the tests then check each artifact in its own
runtime. litert-torch conversions run in a child process (~5-8 s each model).
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
pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

from edgeprune.errors import ConfigError, EdgepruneError  # noqa: E402
from edgeprune.export import FILENAMES, FORMATS, FP32_REL_TOL, export_all, package_bundle  # noqa: E402
from edgeprune.export import core as export_core  # noqa: E402
from edgeprune.export._files import TMP_PREFIX  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # ~1.5 min on an idle 2-core host (4 models x 4 formats, litert-torch)


# --------------------------------------------------------------------------- models


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class ResCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = BasicBlock(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.block(self.stem(x))), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, depthwise 3x3, ReLU6, 1x1 linear project, residual."""

    def __init__(self, c, expand=4):
        super().__init__()
        h = c * expand
        self.body = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c),
        )  # fmt: skip

    def forward(self, x):
        return x + self.body(x)


class MBNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.block = InvertedResidual(16)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


class DetFeatureMLP(nn.Module):
    """Adds a 2x2 determinant feature: ONNX has Det, litert-torch has no lowering for
    aten._linalg_det (a real converter gap, checked against litert-torch 0.10.0)."""

    def __init__(self):
        super().__init__()
        self.mlp = MLP()
        self.w = nn.Parameter(torch.zeros(10))

    def forward(self, x):
        det = torch.linalg.det(x[:, :, :2, :2].reshape(-1, 2, 2))
        return self.mlp(x) + det.reshape(-1, 1) * self.w


class AutoEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 64), nn.Sigmoid())

    def forward(self, x):
        return self.net(x).reshape(-1, 1, 8, 8)


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


# inline models (each coupling written out) and edgeprune's built-ins, unpruned and pruned
MODELS = {
    "mlp": _builtin("mlp"), "cnn": _builtin("cnn"), "rescnn": ResCNN, "mbv2": MBNet,
    "resnet-pruned": _pruned_builtin("resnet"), "mobilenetv2-pruned": _pruned_builtin("mobilenetv2"),
}


# --------------------------------------------------------------------------- data / training


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
def exported(digits, tmp_path_factory):
    """name -> (model, result, out_dir, progress messages) for every model in MODELS."""
    torch.manual_seed(0)
    out = {}
    for name, cls in MODELS.items():
        model = train(cls(), digits)
        d = tmp_path_factory.mktemp(f"export-{name}")
        result, messages = run_export(model, digits, d)
        out[name] = (model, result, d, messages)
    return out


def tmp_leftovers(d: Path):
    return [p.name for p in d.iterdir() if p.name.startswith(TMP_PREFIX) or ".tmp" in p.name or p.suffix == ".part"]


# --------------------------------------------------------------------------- all formats, per model

params = pytest.mark.parametrize("name", list(MODELS))


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


@params
def test_torch_model_learned(exported, name):
    _, result, _, _ = exported[name]
    assert result["onnx"]["torch_metric"] > 85.0


@params
def test_fp32_parity(exported, name):
    _, result, d, _ = exported[name]
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


@params
def test_onnx_int8_is_integer(exported, name):
    _, result, d, _ = exported[name]
    proto = onnx.load(str(d / "model.int8.onnx"))
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
    assert result["onnx-int8"]["details"]["int8"]["int8_initializers"] >= len(per_channel)


@params
def test_tflite_int8_is_integer(exported, name):
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
    assert sorted(p.name for p in d.iterdir()) == sorted([*FILENAMES.values(), "export.json"])


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


def test_converter_timeout_is_per_artifact(digits, tmp_path, monkeypatch):
    """A converter that does not finish is killed; the ONNX artifacts are unaffected."""
    monkeypatch.setattr(export_core, "TFLITE_TIMEOUT_S", 0.5)
    model = train(MLP(), digits, epochs=1)
    result, _ = run_export(model, digits, tmp_path, formats=["tflite", "onnx"])
    assert result["onnx"]["ok"]
    assert not result["tflite"]["ok"] and "timed out" in result["tflite"]["error"]
    assert not (tmp_path / "model.tflite").exists()
    assert tmp_leftovers(tmp_path) == []


def test_fp32_parity_failure_is_reported(digits, tmp_path, monkeypatch):
    """A parity threshold no float artifact can meet turns into ok=False with the numbers."""
    # below zero: even a bit-exact export (difference 0.0, as onnxruntime often gives) fails the check
    monkeypatch.setattr(export_core, "FP32_REL_TOL", -1.0)
    model = train(MLP(), digits, epochs=1)
    result, _ = run_export(model, digits, tmp_path, formats=["onnx"])
    e = result["onnx"]
    assert not e["ok"] and "parity failure" in e["error"] and e["path"] is None
    assert not (tmp_path / "model.onnx").exists()


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
                   formats=["tflite", "tflite-int8", "onnx", "onnx-int8"])
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
    model = MLP().eval()
    digits_like = np.random.default_rng(1).random((8, 1, 8, 8), dtype=np.float32)
    export_all(model, torch.from_numpy(digits_like[:1]), calib=digits_like, test_x=digits_like,
               test_y=np.zeros(8, dtype=np.int64), out_dir=tmp_path, formats=["onnx"])  # fmt: skip
    assert tmp_leftovers(tmp_path) == []


# --------------------------------------------------------------------------- options


def test_opset_and_int8_budget(digits, tmp_path):
    model = train(MLP(), digits, epochs=2)
    result, _ = run_export(model, digits, tmp_path, formats=["onnx", "onnx-int8"], opset=17, int8_tolerance=-100.0)
    assert result["onnx"]["ok"] and result["onnx"]["opset"] == 17
    proto = onnx.load(str(tmp_path / "model.onnx"))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    e = result["onnx-int8"]
    assert e["ok"] and e["within_tolerance"] is False  # over budget is reported, not raised


def test_reconstruction_task_uses_psnr(digits, tmp_path):
    model = train(AutoEncoder(), digits, epochs=3, reconstruction=True)
    result, _ = run_export(model, digits, tmp_path, formats=["onnx", "onnx-int8"], task="reconstruction")
    for e in result.values():
        assert e["ok"] and e["metric_name"] == "psnr" and e["output_shape"] == [1, 1, 8, 8]
        assert e["torch_metric"] > 10.0
    assert abs(result["onnx"]["metric_drop"]) < 0.01
    assert result["onnx-int8"]["metric_drop"] < 3.0


def test_bad_requests(digits, tmp_path):
    with pytest.raises(ConfigError):
        run_export(MLP().eval(), digits, tmp_path, formats=["onnx", "coreml"])
    with pytest.raises(EdgepruneError):
        export_all(MLP().eval(), torch.zeros(2, 1, 8, 8), calib=digits["train_x"][:4], test_x=digits["test_x"],
                   test_y=digits["test_y"], out_dir=tmp_path, formats=["onnx"])  # fmt: skip


# --------------------------------------------------------------------------- bundles


CLASS_NAMES = [f"digit-{i}" for i in range(10)]


def bundle_meta():
    return {"class_names": CLASS_NAMES, "mean": 0.0, "std": 1.0, "source_run": "runs/test", "budget": {"ok": True}}


def test_bundle_android(exported, tmp_path):
    _, result, d, _ = exported["cnn"]
    dist = package_bundle(tmp_path / "dist", target_name="pixel-8", platform="android", artifacts=result,
                          metadata=bundle_meta(), out_dir=d)  # fmt: skip
    names = sorted(p.name for p in dist.iterdir())
    assert names == sorted(["model.int8.tflite", "model.tflite", "metadata.json", "labels.txt", "ModelRunner.kt", "README.md"])
    meta = json.loads((dist / "metadata.json").read_text())
    assert meta["platform"] == "android" and meta["target"] == "pixel-8"
    assert meta["source_run"] == "runs/test" and meta["budget"] == {"ok": True}
    assert meta["input"]["shape"] == [1, 1, 8, 8] and meta["input"]["layout"] == "NCHW"
    assert meta["class_names"] == CLASS_NAMES
    assert (dist / "labels.txt").read_text().splitlines() == CLASS_NAMES
    by_file = {m["file"]: m for m in meta["models"]}
    assert by_file["model.int8.tflite"]["quant"] == result["tflite-int8"]["quant"]
    assert (dist / "model.int8.tflite").read_bytes() == (d / "model.int8.tflite").read_bytes()
    primary = meta["primary_model"]
    assert primary == ("model.int8.tflite" if result["tflite-int8"]["within_tolerance"] else "model.tflite")
    kt = (dist / "ModelRunner.kt").read_text()
    assert "import org.tensorflow.lite.Interpreter" in kt and f'MODEL_FILE = "{primary}"' in kt
    if primary == "model.int8.tflite":
        import re

        scale = float(re.search(r"const val IN_SCALE = ([0-9.eE+-]+)f", kt).group(1))
        assert scale == pytest.approx(result["tflite-int8"]["quant"]["input_scale"], rel=1e-7)
        zp = int(re.search(r"const val IN_ZERO_POINT = (-?[0-9]+)", kt).group(1))
        assert zp == result["tflite-int8"]["quant"]["input_zero_point"]
    assert tmp_leftovers(tmp_path) == []


def _run_infer(dist: Path, sample: np.ndarray, model: str | None = None) -> dict:
    np.save(dist / "sample.npy", sample)
    cmd = [sys.executable, str(dist / "infer.py"), str(dist / "sample.npy")] + (["--model", model] if model else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=dist, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bundle_jetson_and_rpi_run(exported, digits, tmp_path):
    model, result, d, _ = exported["rescnn"]
    sample = digits["test_x"][3]
    with torch.no_grad():
        expected = int(model(torch.from_numpy(sample[None])).argmax())

    jet = package_bundle(tmp_path / "jetson", target_name="orin-nano", platform="jetson", artifacts=result,
                         metadata=bundle_meta(), out_dir=d)  # fmt: skip
    names = {p.name for p in jet.iterdir()}
    assert {"model.onnx", "model.int8.onnx", "metadata.json", "labels.txt", "infer.py", "build_engine.sh", "README.md"} <= names
    assert not any(n.endswith(".tflite") for n in names)
    sh = (jet / "build_engine.sh").read_text()
    assert "trtexec" in sh and "--onnx=model.onnx" in sh and "--saveEngine=" in sh and "--int8" in sh
    assert json.loads((jet / "metadata.json").read_text())["primary_model"] == "model.onnx"
    assert _run_infer(jet, sample)["index"] == expected

    rpi = package_bundle(tmp_path / "rpi", target_name="pi-5", platform="rpi", artifacts=result,
                         metadata=bundle_meta(), out_dir=d)  # fmt: skip
    for model_file in ("model.tflite", "model.int8.tflite"):
        got = _run_infer(rpi, sample, model_file)
        assert got["index"] == expected and got["top1"] == CLASS_NAMES[expected]


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
    with pytest.raises(EdgepruneError):
        package_bundle(tmp_path / "b", target_name="t", platform="android",
                       artifacts={"onnx": result["onnx"]}, metadata={}, out_dir=d)  # fmt: skip
