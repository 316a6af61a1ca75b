"""Bring your own model and data: the example end to end (API and CLI), each data source,
and each mismatch error."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.data import load_dataset
from edgeprune.errors import InputError
from edgeprune.models import arch_spec, build_arch, check_input_shape, load_weights
from edgeprune.pipeline import EXIT_BAD_INPUT, EXIT_OK

from .conftest import REPO, run_cli

EXAMPLE = REPO / "examples" / "byo"


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    """examples/byo/run_example.py through the Python API (it writes the user's npz and weights)."""
    out = tmp_path_factory.mktemp("byo")
    p = subprocess.run([sys.executable, str(EXAMPLE / "run_example.py"), "--out", str(out)], capture_output=True,
                       text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert p.returncode == EXIT_OK, p.stdout[-2000:] + p.stderr[-3000:]
    return out, p.stdout


def test_example_through_the_python_api(example_run):
    out, stdout = example_run
    run = out / "byo-rpi5"
    report = json.loads((run / "report.json").read_text())
    assert report["budget"]["passed"] and report["target"]["name"] == "rpi5"
    assert report["model"]["arch"]["model"].endswith("my_model.py:make_net")
    # started from the user's weights (epochs=0): the dense metric is the user's trained model's
    assert report["training"]["dense"] == [] and report["model"]["dense"]["test_metric"] > 90
    meta = json.loads((run / "dist" / "rpi5" / "metadata.json").read_text())
    assert meta["input"]["normalization"]["mean"][0] == pytest.approx(report["dataset"]["normalization"]["mean"])
    assert "rpi5 budget: passed" in stdout


def test_example_through_the_cli(example_run, tmp_path):
    out, _ = example_run
    p = run_cli("build", "--target", "rpi5", "--model", f"{EXAMPLE / 'my_model.py'}:make_net",
                "--weights", out / "net.pt", "--dataset", out / "digits.npz", "--epochs", "0",
                "--finetune-epochs", "10", "--formats", "onnx,tflite-int8", "--output", tmp_path)
    assert p.returncode == EXIT_OK, p.stderr[-3000:]
    run = tmp_path / "rpi5-make_net-l1"
    exp = json.loads((run / "export.json").read_text())
    assert exp["complete"] and set(exp["artifacts"]) == {"onnx", "tflite-int8"}
    # the compact model replays from the user's factory + plan + weights
    from edgeprune.stages.common import load_compact
    from edgeprune.models import example_for

    model, plan, arch = load_compact(run / "model.pt", build_arch, example_for)
    assert plan.keep and sum(p.numel() for p in model.parameters()) < sum(
        p.numel() for p in build_arch(arch).parameters())


# ----------------------------------------------------------------- data sources

def _digits_arrays(n=400):
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[:n] * 16).astype(np.uint8), d.target[:n]


def test_npz_source(tmp_path):
    x, y = _digits_arrays()
    np.savez(tmp_path / "d.npz", x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:])
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.input_shape == (1, 8, 8) and len(ds.x_test) == 100 and ds.num_classes == 10
    assert len(ds.x_train) + len(ds.x_val) == 300 and ds.x_train.max() <= 1.0


def test_npz_missing_array_is_named(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((4, 8, 8)), y_train=np.zeros(4))
    with pytest.raises(InputError, match="x_test"):
        load_dataset(str(tmp_path / "d.npz"))


def test_image_folder_source(tmp_path):
    from PIL import Image

    x, y = _digits_arrays(120)
    for i, (img, label) in enumerate(zip(x, y)):
        d = tmp_path / "imgs" / f"class_{label}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i}.png")
    ds = load_dataset(str(tmp_path / "imgs"), input_shape=(1, 12, 12))
    assert ds.input_shape == (1, 12, 12) and ds.classes[0] == "class_0"
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 120


def test_empty_image_folder_says_so(tmp_path):
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "b").mkdir()
    with pytest.raises(InputError, match="has no images"):
        load_dataset(str(tmp_path / "imgs"))


def test_callable_source_returning_torch_datasets(tmp_path):
    (tmp_path / "mydata.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n"
        "def make():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x = torch.rand(60, 1, 8, 8, generator=g); y = torch.arange(60) % 3\n"
        "    return TensorDataset(x[:40], y[:40]), TensorDataset(x[40:], y[40:])\n")
    ds = load_dataset(f"{tmp_path / 'mydata.py'}:make")
    assert ds.input_shape == (1, 8, 8) and len(ds.x_test) == 20 and ds.num_classes == 3


# ----------------------------------------------------------------- mismatches

def _user_model_file(tmp_path) -> str:
    (tmp_path / "net.py").write_text(
        "from torch import nn\n"
        "def make(width=8):\n"
        "    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(width * 64, 10))\n")
    return f"{tmp_path / 'net.py'}:make"


def test_weights_mismatch_names_the_first_tensor(tmp_path):
    spec = _user_model_file(tmp_path)
    other = build_arch(arch_spec(spec, (1, 8, 8), 10, {"width": 4}))
    torch.save(other.state_dict(), tmp_path / "w.pt")
    model = build_arch(arch_spec(spec, (1, 8, 8), 10))
    with pytest.raises(InputError, match=r"tensor 0\.weight is \(4, 1, 3, 3\) in the file, \(8, 1, 3, 3\) in the model"):
        load_weights(model, str(tmp_path / "w.pt"))


def test_pickled_model_is_refused_with_the_fix(tmp_path):
    spec = _user_model_file(tmp_path)
    model = build_arch(arch_spec(spec, (1, 8, 8), 10))
    torch.save(model, tmp_path / "full.pt")
    with pytest.raises(InputError, match=r"pickled model, not a state_dict.*model.state_dict\(\)"):
        load_weights(model, str(tmp_path / "full.pt"))


def test_rejected_input_shape_shows_model_error_and_shape(tmp_path):
    spec = _user_model_file(tmp_path)
    arch = arch_spec(spec, (1, 16, 16), 10)
    with pytest.raises(InputError, match=r"rejects input shape 1x1x16x16: RuntimeError"):
        check_input_shape(build_arch(arch), arch)


def test_cli_mismatch_is_exit_2_and_leaves_no_run_folder(tmp_path):
    spec = _user_model_file(tmp_path)
    p = run_cli("build", "--model", spec, "--input-shape", "1x1x16x16", "--output", tmp_path / "runs")
    assert p.returncode == EXIT_BAD_INPUT and "rejects input shape 1x1x16x16" in p.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_reconstruction_task_uses_psnr(tmp_path):
    """The autoencoder path: task reconstruction, metric PSNR, through the pipeline's stages."""
    p = run_cli("build", "--model", "autoencoder", "--epochs", "2", "--finetune-epochs", "1", "--formats", "onnx",
                "--output", tmp_path, "--name", "ae")
    assert p.returncode in (0, 3), p.stderr[-2000:]
    report = json.loads((tmp_path / "ae" / "report.json").read_text())
    assert report["task"] == "reconstruction" and report["metric_name"] == "psnr"
    assert report["artifacts"][0]["metric_name"] == "psnr" and report["model"]["compact"]["test_metric"] > 5.0
