"""Bring your own model and data: the example end to end (API and CLI), each data source,
the Python API (in-memory data, a user metric, each stage alone), each mismatch error, and
resume on changed file contents."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import edgeprune
from edgeprune.data import load_dataset
from edgeprune.errors import ConfigError, InputError
from edgeprune.imports import name_code
from edgeprune.metrics import psnr
from edgeprune.models import arch_spec, build_arch, build_model, check_input_shape, example_for, load_weights
from edgeprune.pipeline import EXIT_BAD_INPUT, EXIT_OK
from edgeprune.surgery import PruningPlan, analyze, load_compact

from .conftest import REPO, run_cli

EXAMPLE = REPO / "examples" / "byo"
QUICK = ("--finetune-epochs", "0", "--formats", "onnx", "--data-limit", "300")  # the cheapest full build


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    """examples/byo/run_example.py through the Python API (it writes the user's npz and weights)."""
    out = tmp_path_factory.mktemp("byo")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    p = subprocess.run([sys.executable, str(EXAMPLE / "run_example.py"), "--out", str(out)], capture_output=True,
                       text=True, timeout=900, stdin=subprocess.DEVNULL, env=env)  # this checkout's edgeprune
    assert p.returncode == EXIT_OK, p.stdout[-2000:] + p.stderr[-3000:]
    return out, p.stdout


def test_example_through_the_python_api(example_run):
    out, stdout = example_run
    run = out / "byo-rpi5"
    report = json.loads((run / "report.json").read_text())
    assert report["budget"]["passed"] and report["target"]["name"] == "rpi5"
    assert report["model"]["arch"]["model"].endswith("my_model.py:make_net")
    # given weights, epochs default to 0: the dense model is the user's trained model, not retrained
    assert report["config"]["train"]["epochs"] == 0
    assert report["training"]["dense"] == [] and report["model"]["dense"]["test_metric"] > 90
    meta = json.loads((run / "dist" / "rpi5" / "metadata.json").read_text())
    assert meta["input"]["normalization"]["mean"][0] == pytest.approx(report["dataset"]["normalization"]["mean"])
    # the user's uint8 pixels were scaled by 1/255 before the normalization: recorded for the device
    assert report["dataset"]["preprocessing"]["input_scale"] == pytest.approx(1 / 255)
    assert "rpi5 budget: passed" in stdout


def test_example_through_the_cli(example_run, tmp_path):
    out, _ = example_run
    p = run_cli("build", "--target", "rpi5", "--model", f"{EXAMPLE / 'my_model.py'}:make_net",
                "--weights", out / "net.pt", "--dataset", out / "digits.npz",
                "--finetune-epochs", "10", "--formats", "onnx,tflite-int8", "--output", tmp_path)
    assert p.returncode == EXIT_OK, p.stderr[-3000:]
    run = tmp_path / "rpi5-make_net-l1"
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 0
    exp = json.loads((run / "export.json").read_text())
    assert exp["complete"] and set(exp["artifacts"]) == {"onnx", "tflite-int8"}
    # the compact model replays from the user's factory + plan + weights (once this process names that factory)
    name_code(f"{EXAMPLE / 'my_model.py'}:make_net")
    model, plan, arch = load_compact(run / "model.pt", build_arch, example_for)
    assert plan.keep and sum(p.numel() for p in model.parameters()) < sum(
        p.numel() for p in build_arch(arch).parameters())


# ----------------------------------------------------------------- data sources

def _digits_arrays(n=400):
    """Real 8x8 digits as uint8 pixels 0..255 (sklearn stores counts 0..16)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images[:n] * (255 / 16)).astype(np.uint8), d.target[:n]


def test_npz_source_scales_uint8_and_records_it(tmp_path):
    x, y = _digits_arrays()
    np.savez(tmp_path / "d.npz", x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:])
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.input_shape == (1, 8, 8) and len(ds.x_test) == 100 and ds.num_classes == 10
    assert len(ds.x_train) + len(ds.x_val) == 300
    np.testing.assert_allclose(ds.x_test[:, 0], x[300:] / 255.0, rtol=1e-6)
    prep = ds.describe()["preprocessing"]
    assert prep["input_scale"] == pytest.approx(1 / 255) and prep["mean"] == ds.mean and prep["std"] == ds.std
    # what a device does to a raw uint8 input gives exactly what the model was trained on
    raw = x[300:301].astype(np.float32)[:, None]
    np.testing.assert_allclose((raw * prep["input_scale"] - prep["mean"]) / prep["std"], ds.normalize(ds.x_test[:1]),
                               rtol=1e-5, atol=1e-6)


def test_npz_missing_array_is_named(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((4, 8, 8)), y_train=np.zeros(4))
    with pytest.raises(InputError, match=r"x_test.*\[data\]"):
        load_dataset(str(tmp_path / "d.npz"))


def test_data_section_names_the_npz_arrays_through_the_cli(tmp_path):
    x, y = _digits_arrays(500)
    np.savez(tmp_path / "mine.npz", images=x[:400], labels=y[:400], test_images=x[400:], test_labels=y[400:])
    quick = ("--epochs", "1", "--finetune-epochs", "0", "--formats", "onnx")
    p = run_cli("build", "--dataset", tmp_path / "mine.npz", *quick, "--output", tmp_path / "no")
    _fails_cleanly(p, tmp_path / "no", "missing array(s) ['x_train', 'y_train', 'x_test', 'y_test']", "[data]")
    names = [f"digit {i}" for i in range(10)]
    (tmp_path / "data.toml").write_text('[data]\nx_train = "images"\ny_train = "labels"\nx_test = "test_images"\n'
                                        f'y_test = "test_labels"\nclasses = {json.dumps(names)}\n')
    p = run_cli("build", "--dataset", tmp_path / "mine.npz", "--config", tmp_path / "data.toml", *quick,
                "--output", tmp_path, "--name", "r")
    assert p.returncode in (EXIT_OK, 3), p.stderr[-2000:]
    d = json.loads((tmp_path / "r" / "train.json").read_text())["dataset"]
    assert (d["n_train"] + d["n_val"], d["n_test"], d["input_shape"]) == (400, 100, [1, 8, 8])
    assert d["classes"] == names and d["source"] == "user file mine.npz"


def _png_folder(root, n=120, size=None):
    from PIL import Image

    x, y = _digits_arrays(n)
    for i, (img, label) in enumerate(zip(x, y)):
        d = root / f"class_{label}"
        d.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(img)
        (im.resize(size) if size else im).save(d / f"{i:04d}.png")
    return root


def test_image_folder_source(tmp_path):
    _png_folder(tmp_path / "imgs")
    ds = load_dataset(str(tmp_path / "imgs"), input_shape=(1, 12, 12))
    assert ds.input_shape == (1, 12, 12) and ds.classes[0] == "class_0"
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 120
    prep = ds.preprocessing_spec()
    assert prep == {**prep, "input_scale": pytest.approx(1 / 255), "color_mode": "L", "resize": [12, 12],
                    "resample": "bilinear"}


def test_image_folder_of_rgb_jpegs(tmp_path):
    from PIL import Image

    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 210)}
    for name, rgb in colours.items():
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (10, 6), rgb).save(tmp_path / "imgs" / name / f"{i}.jpg", quality=95)
    ds = load_dataset(str(tmp_path / "imgs"))
    assert ds.input_shape == (3, 6, 10) and ds.classes == ["blue", "green", "red"]
    assert ds.preprocessing_spec()["color_mode"] == "RGB" and ds.preprocessing_spec()["resize"] == [6, 10]
    # channel-first RGB in [0, 1]: each image's mean colour is its class's colour (JPEG is lossy: +-3/255)
    x = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    for img, label in zip(x, y):
        np.testing.assert_allclose(img.mean(axis=(1, 2)), np.array(colours[ds.classes[label]]) / 255, atol=3 / 255)


def test_corrupt_first_image_is_a_one_line_error(tmp_path):
    _png_folder(tmp_path / "imgs", 40)
    first = sorted((tmp_path / "imgs" / "class_0").iterdir())[0]
    first.write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    with pytest.raises(InputError, match=f"cannot read image .*{first.name}"):
        load_dataset(str(tmp_path / "imgs"))
    p = run_cli("build", "--dataset", tmp_path / "imgs", "--output", tmp_path / "runs")
    assert p.returncode == EXIT_BAD_INPUT and first.name in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "runs").exists()


def test_empty_image_folder_through_the_cli(tmp_path):
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "b").mkdir()
    with pytest.raises(InputError, match="has no images"):
        load_dataset(str(tmp_path / "imgs"))
    p = run_cli("build", "--dataset", tmp_path / "imgs", "--output", tmp_path / "runs")
    assert p.returncode == EXIT_BAD_INPUT and "has no images" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_callable_source_returning_torch_datasets(tmp_path):
    (tmp_path / "mydata.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n"
        "def make():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x = torch.rand(60, 1, 8, 8, generator=g); y = torch.arange(60) % 3\n"
        "    return TensorDataset(x[:40], y[:40]), TensorDataset(x[40:], y[40:])\n")
    name_code(f"{tmp_path / 'mydata.py'}:make")  # a library call names its code itself (SECURITY.md)
    ds = load_dataset(f"{tmp_path / 'mydata.py'}:make")
    assert ds.input_shape == (1, 8, 8) and len(ds.x_test) == 20 and ds.num_classes == 3


def test_callable_source_returning_a_dict(tmp_path):
    x, y = _digits_arrays(200)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "mydict.py").write_text(
        "import numpy as np\nfrom pathlib import Path\nHERE = Path(__file__).parent\n"
        "def make():\n"
        "    x, y = np.load(HERE / 'x.npy'), np.load(HERE / 'y.npy')\n"
        "    return {'x_train': x[:150], 'y_train': y[:150], 'x_val': x[150:170], 'y_val': y[150:170],\n"
        "            'x_test': x[170:], 'y_test': y[170:], 'classes': [f'd{i}' for i in range(10)]}\n")
    name_code(f"{tmp_path / 'mydict.py'}:make")
    ds = load_dataset(f"{tmp_path / 'mydict.py'}:make")
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (150, 20, 30)
    assert ds.classes[3] == "d3" and ds.preprocessing_spec()["input_scale"] == pytest.approx(1 / 255)
    np.testing.assert_allclose(ds.x_val[:, 0], x[150:170] / 255.0, rtol=1e-6)
    # renamed through [data] keys: the same function's arrays under other names fail with the names
    with pytest.raises(InputError, match=r"missing array\(s\) \['images'"):
        load_dataset(f"{tmp_path / 'mydict.py'}:make", keys={"x_train": "images"})


# ----------------------------------------------------------------- mismatches, through the CLI

def _user_model_file(tmp_path) -> str:
    """A user's model that only fits 8x8 inputs (Linear after Flatten)."""
    (tmp_path / "net.py").write_text(
        "from torch import nn\n"
        "def make(width=8, out=10):\n"
        "    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(width * 64, out))\n")
    name_code(f"{tmp_path / 'net.py'}:make")  # in-process library calls below build it
    return f"{tmp_path / 'net.py'}:make"


def _fails_cleanly(p, out, *needles):
    """Exit 2, one line on stderr holding every needle, no run folder left behind."""
    assert p.returncode == EXIT_BAD_INPUT, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_weights_mismatch_names_the_first_tensor_and_the_fix(tmp_path):
    spec = _user_model_file(tmp_path)
    torch.save(build_arch(arch_spec(spec, (1, 8, 8), 10, {"width": 4})).state_dict(), tmp_path / "w.pt")
    model = build_arch(arch_spec(spec, (1, 8, 8), 10))
    with pytest.raises(InputError, match=r"tensor 0\.weight is \(4, 1, 3, 3\) in the file, \(8, 1, 3, 3\) in the model"):
        load_weights(model, str(tmp_path / "w.pt"))
    p = run_cli("build", "--model", spec, "--weights", tmp_path / "w.pt", "--output", tmp_path / "runs")
    _fails_cleanly(p, tmp_path / "runs", "tensor 0.weight is (4, 1, 3, 3)", "[model_options]")


def test_pickled_model_is_refused_with_the_fix(tmp_path):
    spec = _user_model_file(tmp_path)
    torch.save(build_arch(arch_spec(spec, (1, 8, 8), 10)), tmp_path / "full.pt")
    p = run_cli("build", "--model", spec, "--weights", tmp_path / "full.pt", "--output", tmp_path / "runs")
    _fails_cleanly(p, tmp_path / "runs", "pickled object (torch.nn.modules.container.Sequential), not a state_dict",
                   "torch.save(model.state_dict(), path)")


@pytest.mark.parametrize("content,why", [(b"hello world\n", "not a torch.save file"), (b"", "empty or truncated"),
                                         (b"PK\x03\x04garbage", "damaged zip archive")])
def test_garbage_weights_file_says_what_is_wrong(tmp_path, content, why):
    spec = _user_model_file(tmp_path)
    (tmp_path / "w.pt").write_bytes(content)
    with pytest.raises(InputError, match=f"{why}.*torch.save\\(model.state_dict\\(\\), path\\)"):
        load_weights(build_arch(arch_spec(spec, (1, 8, 8), 10)), str(tmp_path / "w.pt"))


def test_rejected_input_shape_shows_model_error_and_shape(tmp_path):
    spec = _user_model_file(tmp_path)
    arch = arch_spec(spec, (1, 16, 16), 10)
    with pytest.raises(InputError, match=r"rejects input shape 1x1x16x16: RuntimeError"):
        check_input_shape(build_arch(arch), arch)
    # through the CLI: an image folder resized to 16x16 matches the shape, the model rejects it
    _png_folder(tmp_path / "imgs", 60)
    p = run_cli("build", "--model", spec, "--dataset", tmp_path / "imgs", "--input-shape", "1x1x16x16",
                "--output", tmp_path / "runs")
    _fails_cleanly(p, tmp_path / "runs", "rejects input shape 1x1x16x16: RuntimeError", "--input-shape")


def test_input_shape_that_does_not_match_the_data(tmp_path):
    """A shape the model accepts (global pooling) but the 8x8 data does not have: caught before any stage."""
    (tmp_path / "pool.py").write_text(
        "from torch import nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),"
        " nn.Linear(8, 10))\n")
    p = run_cli("build", "--model", f"{tmp_path / 'pool.py'}:make", "--input-shape", "1x1x16x16",
                "--output", tmp_path / "runs")
    _fails_cleanly(p, tmp_path / "runs", "input shape 1x1x16x16 (--input-shape) does not match the data's 1x1x8x8")


def test_output_count_must_match_the_classes(tmp_path):
    spec = _user_model_file(tmp_path)
    (tmp_path / "c.toml").write_text("[model_options]\nout = 12\n")
    p = run_cli("build", "--model", spec, "--config", tmp_path / "c.toml", "--output", tmp_path / "runs")
    _fails_cleanly(p, tmp_path / "runs", "outputs 12 value(s) per sample, but the data has 10 classes")


def test_reconstruction_model_must_reproduce_the_input_shape(tmp_path):
    spec = _user_model_file(tmp_path)
    p = run_cli("build", "--model", spec, "--task", "reconstruction", "--output", tmp_path / "runs")
    _fails_cleanly(p, tmp_path / "runs", "outputs shape (10,) per sample, but reconstruction needs the input's shape")


def test_unexpected_failure_in_a_new_folder_leaves_nothing(tmp_path):
    """A bug in the user's model that shows only in training (not on the shape check): the first stage
    fails with the model's exception and the folder it was writing is removed."""
    (tmp_path / "bad.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class Bad(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.fc = nn.Linear(64, 10)\n"
        "    def forward(self, x):\n"
        "        if self.training: raise ZeroDivisionError('boom in training')\n"
        "        return self.fc(x.flatten(1))\n"
        "def make():\n    return Bad()\n")
    (tmp_path / "frac.py").write_text("def frac(outputs, targets):\n    return float((outputs.argmax(1) == targets).mean())\n")
    p = run_cli("build", "--model", f"{tmp_path / 'bad.py'}:make", "--metric", f"{tmp_path / 'frac.py'}:frac",
                "--output", tmp_path / "runs")
    assert p.returncode == 1 and "ZeroDivisionError: boom in training" in p.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    # a user metric of unknown scale under the target's max_accuracy_drop (in points) is pointed out first
    assert ("warning: the target's max_accuracy_drop 2 applies to your metric in its own units; set "
            "budget.max_accuracy_drop") in " ".join(p.stderr.split())


# ----------------------------------------------------------------- resume on new contents

def test_rewritten_weights_rerun_training(tmp_path):
    spec = _user_model_file(tmp_path)
    w = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(build_arch(arch_spec(spec, (1, 8, 8), 10)).state_dict(), w)
    args = ("build", "--model", spec, "--weights", w, "--method", "l1", *QUICK, "--output", tmp_path, "--name", "r")
    assert run_cli(*args).returncode in (EXIT_OK, 3)
    fp = json.loads((tmp_path / "r" / "stages.json").read_text())["train"]["fingerprint"]
    again = run_cli(*args)
    assert "train: up to date" in again.stderr  # unchanged inputs: resumed
    torch.manual_seed(1)
    torch.save(build_arch(arch_spec(spec, (1, 8, 8), 10)).state_dict(), w)  # same path, same size, new weights
    p = run_cli(*args)
    assert p.returncode in (EXIT_OK, 3), p.stderr[-2000:]
    assert "train: up to date" not in p.stderr and "▶ train" in p.stderr
    assert json.loads((tmp_path / "r" / "stages.json").read_text())["train"]["fingerprint"] != fp


# ----------------------------------------------------------------- tasks and metrics

def test_reconstruction_task_beats_trivial_baselines(tmp_path):
    """The autoencoder path: task reconstruction, metric PSNR, through every stage. The compact
    model and its artifact must beat, by 3 dB, the best trivial reconstruction of the same test
    split: all zeros, a constant 0.5, and the per-pixel mean of the training images."""
    # SGD needs a large step for the sigmoid autoencoder: at the default lr 0.01 two epochs stay at ~7.5 dB
    (tmp_path / "ae.toml").write_text("[train]\nepochs = 5\nfinetune_epochs = 2\nlr = 0.3\nbatch_size = 16\n"
                                      "weight_decay = 0.0\n[method.pl-gates]\nepochs = 2\n")
    p = run_cli("build", "--model", "autoencoder", "--config", tmp_path / "ae.toml", "--formats", "onnx",
                "--output", tmp_path, "--name", "ae")
    assert p.returncode == EXIT_OK, p.stderr[-2000:]
    report = json.loads((tmp_path / "ae" / "report.json").read_text())
    assert report["task"] == "reconstruction" and report["metric_name"] == "psnr"
    ds = load_dataset("digits")  # the run's split (seed 0); reconstruction targets are the [0, 1] inputs
    xte = ds.x_test
    baselines = {"zeros": psnr(np.zeros_like(xte), xte), "half": psnr(np.full_like(xte, 0.5), xte),
                 "train mean": psnr(np.broadcast_to(ds.x_train.mean(axis=0), xte.shape), xte)}
    best = max(baselines.values())
    assert report["model"]["compact"]["test_metric"] > best + 3.0, (report["model"]["compact"], baselines)
    art = report["artifacts"][0]
    assert art["metric_name"] == "psnr" and art["metric"] > best + 3.0
    # the report shows the reconstructions (original / dense / compact) as an embedded image grid
    assert report["reconstructions"] == "reconstructions.png"
    png = (tmp_path / "ae" / "reconstructions.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert "data:image/png;base64," in (tmp_path / "ae" / "report.html").read_text()


def frac_correct(outputs, targets):
    """A user metric on a 0-1 scale (accuracy as a fraction)."""
    return float((np.asarray(outputs).argmax(axis=1) == np.asarray(targets)).mean())


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    """edgeprune.build on in-memory arrays with a user metric callable and example_input."""
    out = tmp_path_factory.mktemp("api")
    x, y = _digits_arrays(700)
    result = edgeprune.build("cnn", train=(x[:500], y[:500]), test=(x[500:], y[500:]), metric=frac_correct,
                             example_input=torch.zeros(1, 1, 8, 8), target="rpi4", epochs=3, finetune_epochs=1,
                             formats=["onnx"], max_accuracy_drop=0.03, output=out, name="api",
                             model_options={"widths": [16, 32], "hidden": 32})
    return out, result


def test_api_in_memory_data_and_user_metric(api_run):
    out, result = api_run
    run = result.run_dir
    cfg = json.loads((run / "config.json").read_text())
    metric = cfg["metric"]  # the callable's name + a hash of its code: an edited metric is a new metric
    assert metric.startswith("api:frac_correct-") and len(metric) == len("api:frac_correct-") + 8
    assert cfg["input_shape"] == "1x8x8"
    # the arrays were saved (replayable) where the config says, once
    assert (out / ".data").is_dir() and [str(p) for p in (out / ".data").iterdir()] == [cfg["dataset"]]
    train = json.loads((run / "train.json").read_text())
    assert train["metric_name"] == metric and 0.5 < train["test_metric"] <= 1.0
    assert train["dataset"]["n_test"] == 200 and train["dataset"]["preprocessing"]["input_scale"] == pytest.approx(1 / 255)
    fine = json.loads((run / "finetune.json").read_text())
    assert fine["metric_name"] == metric and 0.0 <= fine["test_metric"] <= 1.0


def test_api_user_metric_is_the_metric_of_the_artifacts_and_the_verdict(api_run):
    """One metric for the whole run: the artifact is scored with the user's metric too, and the
    budget's max_accuracy_drop (0.03, in the metric's own 0-1 units) compares like with like."""
    _, result = api_run
    run = result.run_dir
    dense = json.loads((run / "train.json").read_text())["test_metric"]
    art = json.loads((run / "export.json").read_text())["artifacts"]["onnx"]
    assert art["metric_name"].startswith("api:frac_correct-") and 0.0 <= art["metric"] <= 1.0
    verdict = json.loads((run / "budget" / "rpi4.json").read_text())
    line = next(ln for ln in verdict["lines"] if ln["name"] == "max_accuracy_drop")
    assert line["value"] == pytest.approx(dense - art["metric"]) and line["budget"] == 0.03
    assert line["passed"] == (dense - art["metric"] <= 0.03)
    assert result.passed == all(ln["passed"] for ln in verdict["lines"])


def test_cli_stage_on_an_api_metric_run_says_how(api_run):
    _, result = api_run
    p = run_cli("finetune", result.run_dir)
    assert p.returncode == EXIT_BAD_INPUT and len(p.stderr.strip().splitlines()) == 1
    assert "in-process metric (frac_correct" in p.stderr and "--metric file.py:function" in p.stderr


def test_api_bad_input_leaves_no_files_and_names_the_api_argument(tmp_path):
    x, y = _digits_arrays(300)
    out = tmp_path / "runs"
    with pytest.raises(InputError, match=r"\(example_input=\) does not match the data's 1x1x8x8"):
        edgeprune.build("cnn", train=(x[:200], y[:200]), test=(x[200:], y[200:]), example_input=torch.zeros(1, 1, 16, 16),
                        output=out)
    assert not out.exists() or not any(out.rglob("*"))
    with pytest.raises(InputError, match="x and y lengths differ"):
        edgeprune.build("cnn", train=(x[:200], y[:150]), test=(x[200:], y[200:]), output=out)
    with pytest.raises(ConfigError, match="unknown option"):
        edgeprune.build("cnn", train=(x[:200], y[:200]), test=(x[200:], y[200:]), output=out, epoch=3)
    assert not out.exists() or not any(out.rglob("*"))


# ----------------------------------------------------------------- each stage alone, from the API

def _half_plan(model, example) -> PruningPlan:
    graph = analyze(model, example)
    return PruningPlan(keep={g: list(range(0, grp.size, 2)) for g, grp in graph.groups.items()}, method="test")


def test_api_compact_verifies_and_infers_the_example(api_run, tmp_path):
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10)
    example = torch.zeros(1, 1, 8, 8)
    plan = _half_plan(model, example)
    with pytest.raises(InputError, match="pass example_input="):
        edgeprune.compact(model, plan)
    small, facts = edgeprune.compact(model, plan, example, report=True)
    assert facts["n_inputs"] == 32 and facts["rel_diff"] <= facts["rel_tol"]  # verified on random inputs
    assert sum(p.numel() for p in small.parameters()) == facts["params"] < sum(p.numel() for p in model.parameters())
    # a run folder's plan.json: the example's shape comes from the run; result equals the run's compact model
    run = api_run[1].run_dir
    pruned, _, _ = load_compact(run / "pruned.pt", build_arch, example_for)
    small = edgeprune.compact(pruned, run / "plan.json")
    ref, _, _ = load_compact(run / "compact.pt", build_arch, example_for)
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(x), ref(x))


def test_api_export_and_bench(api_run, tmp_path):
    run = api_run[1].run_dir
    model, _, _ = load_compact(run / "model.pt", build_arch, example_for)
    ds = load_dataset(json.loads((run / "config.json").read_text())["dataset"])
    test_x, test_y = ds.normalize(ds.x_test), ds.y_test
    res = edgeprune.export_model(model, test_x=test_x, test_y=test_y, out_dir=tmp_path / "exp", formats=["onnx"])
    onnx = res["onnx"]
    assert onnx["ok"] and (tmp_path / "exp" / onnx["path"]).is_file()
    assert onnx["rel_diff"] < 1e-4 and onnx["metric"] == pytest.approx(onnx["torch_metric"], abs=0.5)
    stats = edgeprune.benchmark(tmp_path / "exp" / onnx["path"], runs=5, warmup=1, repeats=1)
    assert stats["source"] == "measured" and stats["where"] == "host" and stats["p50_ms"] > 0
    with pytest.raises(InputError, match="not found"):
        edgeprune.benchmark(tmp_path / "exp" / "missing.onnx")
