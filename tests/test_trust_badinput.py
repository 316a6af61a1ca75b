"""Every bad input of issue 14 through the real `edgeprune build`: exit 2, one line naming the problem and the
fix, and no run folder left behind. Each fails before any training (a few seconds each)."""

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgeprune.pipeline import EXIT_BAD_INPUT

from .conftest import REPO, run_cli

RPI5 = (REPO / "edgeprune" / "targets" / "rpi5.toml").read_text()


def _digits(n=120):
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[:n] / 16.0).astype(np.float32), d.target[:n].astype(np.int64)


def _npz(path, n_train=80, **changes):
    x, y = _digits()
    arrays = {"x_train": x[:n_train], "y_train": y[:n_train], "x_test": x[100:], "y_test": y[100:]}
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


def _fails(p, out, *needles):
    assert p.returncode == EXIT_BAD_INPUT, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeprune: error:"), p.stderr[-2000:]
    for n in needles:
        assert n in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir()), "a partial run folder was left behind"


def _x_with(value):
    x, _ = _digits()
    x = x[:80].copy()
    x[7, 3, 3] = value
    return x


def _truncated(path):
    _npz(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


DATA_CASES = {
    "nan": (lambda d: _npz(d / "d.npz", x_train=_x_with(np.nan)), ["x_train contains NaN or Inf", "sample 7"]),
    "inf": (lambda d: _npz(d / "d.npz", x_train=_x_with(np.inf)), ["x_train contains NaN or Inf"]),
    "empty npz": (lambda d: (d / "d.npz").write_bytes(b"") or d / "d.npz", ["is empty (0 bytes)"]),
    "truncated npz": (lambda d: _truncated(d / "d.npz"), ["cannot read", "save it again with numpy.savez"]),
    "too few for a val split": (lambda d: _npz(d / "d.npz", n_train=3), ["3 training sample(s) are too few",
                                                                         "at least 4"]),
    "labels (N, 1)": (lambda d: _npz(d / "d.npz", y_train=_digits()[1][:80, None]),
                      ["y_train has shape (80, 1)", "y.reshape(-1)"]),
    "class name with a newline": (lambda d: _npz(d / "d.npz", classes=np.array(["zero\nnull"] + list("123456789"))),
                                  ["class name 'zero\\nnull'", "one-line class names"]),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data(tmp_path, case):
    make, needles = DATA_CASES[case]
    path = make(tmp_path)
    out = tmp_path / "runs"
    p = run_cli("build", "--dataset", path, "--output", out)
    _fails(p, out, *needles)


def test_truncated_npz_is_really_truncated(tmp_path):
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(_truncated(tmp_path / "t.npz"))


def test_model_factory_that_raises_anything(tmp_path):
    (tmp_path / "net.py").write_text("def make():\n    raise ValueError('no weights downloaded')\n")
    out = tmp_path / "runs"
    p = run_cli("build", "--model", f"{tmp_path / 'net.py'}:make", "--output", out)
    _fails(p, out, "model factory", "raised ValueError: no weights downloaded")


def test_output_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    p = run_cli("build", "--output", tmp_path / "f")
    _fails(p, tmp_path / "nothing", "is a file, not a folder", "--output DIR")
    assert (tmp_path / "f").read_text() == "x"


def test_output_below_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    p = run_cli("build", "--output", tmp_path / "f" / "runs")
    _fails(p, tmp_path / "nothing", "not writable", "--output DIR")


def test_output_that_is_not_writable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        out = (ro if os.geteuid() != 0 else Path("/proc")) / "edgeprune-runs"  # root writes anywhere but /proc
        p = run_cli("build", "--output", out)
        _fails(p, tmp_path / "nothing", "--output")
        assert "not writable" in p.stderr or "cannot create run folder" in p.stderr
        assert not out.exists()
    finally:
        ro.chmod(0o755)


def test_name_cannot_escape_output(tmp_path):
    out = tmp_path / "a" / "b" / "runs"
    p = run_cli("build", "--output", out, "--name", "../../x")
    _fails(p, out, "name '../../x' must be a plain folder name")
    assert not (tmp_path / "a" / "x").exists() and not (tmp_path / "a").exists()


CONFIG_CASES = {
    "export.formats typo (flag)": (["--formats", "onnx,tflit"], None, ["unknown format 'tflit'", "onnx-int8"]),
    "export.formats typo (toml)": ([], '[export]\nformats = ["onxx"]\n', ["unknown format 'onxx'"]),
    "bench.repeats = 0": ([], "[bench]\nrepeats = 0\n", ["bench.repeats must be >= 1, got 0"]),
    "width_multiple = -4": (["--width-multiple=-4"], None, ["method.width_multiple must be >= 0, got -4"]),
    "negative budget": ([], "[budget]\nlatency_p50_ms = -5.0\n", ["budget.latency_p50_ms must be > 0"]),
    "negative accuracy drop": ([], "[budget]\nmax_accuracy_drop = -1\n", ["budget.max_accuracy_drop must be >= 0"]),
    "nan in the config": ([], "[train]\nlr = nan\n", ["train.lr must be a finite number, got nan"]),
    "input shape -1x...": (["--input-shape=-1x1x8x8"], None, ["the batch dimension must be 1"]),
    "input shape with a negative dim": (["--input-shape", "1x1x-8x8"], None, ["is not like 1x3x32x32"]),
    "nan in a target TOML": (["--target", "{tmp}/nan.toml"], None, ["budget.latency_p50_ms", "finite"]),
    "inf device fact in a target TOML": (["--target", "{tmp}/inf.toml"], None, ["device.clock_ghz.value", "finite"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_value(tmp_path, case):
    args, toml, needles = CONFIG_CASES[case]
    (tmp_path / "nan.toml").write_text(RPI5.replace("latency_p50_ms = ", "latency_p50_ms = nan #", 1))
    (tmp_path / "inf.toml").write_text(RPI5.replace("clock_ghz = { value = 2.4", "clock_ghz = { value = inf", 1))
    extra = []
    if toml is not None:
        (tmp_path / "c.toml").write_text(toml)
        extra = ["--config", tmp_path / "c.toml"]
    out = tmp_path / "runs"
    p = run_cli("build", *[a.replace("{tmp}", str(tmp_path)) for a in args], *extra, "--output", out)
    _fails(p, out, *needles)


def test_broken_target_toml_in_the_working_directory_shows_its_parse_error(tmp_path):
    (tmp_path / "myboard.toml").write_text('name = "myboard"\ntitle = "x\n')
    p = run_cli("build", "--target", "myboard", "--output", tmp_path / "runs", cwd=tmp_path)
    _fails(p, tmp_path / "runs", "myboard.toml: malformed TOML")
    assert "unknown target" not in p.stderr
    (tmp_path / "myboard.toml").write_text(RPI5.replace('name = "rpi5"', 'name = "myboard"').replace(
        "[runtime]", "[runtime]\nthreadz = 4", 1))
    p = run_cli("targets", "show", "myboard", cwd=tmp_path)
    assert p.returncode == EXIT_BAD_INPUT and "runtime.threadz" in p.stderr and "unknown target" not in p.stderr
