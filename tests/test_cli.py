"""The real CLI in a subprocess: the embedded default build, resume, reruns, bad input."""

import json
import shutil
from pathlib import Path

import pytest

from edgeprune.pipeline import EXIT_BAD_INPUT, EXIT_BUDGET_FAILED, EXIT_OK

from .conftest import run_cli

FAST = ["--epochs", "6", "--finetune-epochs", "2"]


def test_default_build_leaves_a_complete_run_folder(built):
    run, p = built
    for f in ["config.json", "dense.pt", "plan.json", "compact.pt", "model.pt", "export.json", "bench/rpi4.json",
              "budget/rpi4.json", "report.json", "report.html", "dist/rpi4/metadata.json"]:
        assert (run / f).is_file(), f
    exp = json.loads((run / "export.json").read_text())
    assert exp["complete"] and set(exp["artifacts"]) == {"onnx", "onnx-int8", "tflite", "tflite-int8"}
    report = json.loads((run / "report.json").read_text())
    assert report["schema"] == "edgeprune-report/1"
    assert report["budget"]["passed"] is True
    # the compact model really is smaller and was verified against the masked model
    assert report["model"]["compact"]["macs"] < report["model"]["dense"]["macs"] * 0.55
    assert report["model"]["compact"]["verification"]["rel_diff"] <= 1e-5
    assert report["model"]["compact"]["test_metric"] > 90.0
    # every latency figure says where it comes from
    for art in report["artifacts"]:
        assert art["latency"]["host"]["source"] == "measured"
        assert art["latency"]["predicted"]["source"] == "predicted"
    assert "build complete" in p.stdout


def test_model_files_load_with_weights_only(built):
    import torch

    run, _ = built
    for name in ("dense.pt", "compact.pt", "model.pt"):
        blob = torch.load(run / name, weights_only=True)
        assert "state_dict" in blob and "arch" in blob


def test_rerun_resumes_every_stage(built):
    run, _ = built
    p = run_cli("build", "--target", "rpi4", "--output", run.parent)
    assert p.returncode == EXIT_OK, p.stderr[-2000:]
    assert p.stderr.count("up to date (resumed)") == 9


def test_same_seed_same_plan(built, tmp_path):
    run, _ = built
    p = run_cli("build", "--output", tmp_path, "--formats", "onnx", "--name", "again")
    assert p.returncode == EXIT_OK, p.stderr[-2000:]
    a = json.loads((run / "plan.json").read_text())
    b = json.loads((tmp_path / "again" / "plan.json").read_text())
    assert a["keep"] == b["keep"] and a["dropped"] == b["dropped"]


def test_stage_rerun_on_existing_run_folder(built, tmp_path):
    run, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "report.html").unlink()
    p = run_cli("report", copy, "-q")
    assert p.returncode == EXIT_OK, p.stderr
    assert (copy / "report.html").is_file()
    p = run_cli("bench", copy, "--target", "rpi5")
    assert p.returncode == EXIT_OK, p.stderr[-2000:]
    bench = json.loads((copy / "bench" / "rpi5.json").read_text())
    assert bench["target"] == "rpi5" and bench["artifacts"]["onnx"]["predicted"]["latency_ms"] > 0
    # bench reruns the budget and the report for that target: neither is left stale
    verdict = json.loads((copy / "budget" / "rpi5.json").read_text())
    assert verdict["target"] == "rpi5" and verdict["lines"]
    report = json.loads((copy / "report.json").read_text())
    assert report["target"]["name"] == "rpi5" and "rpi5" in report["latency_per_target"]
    assert "Raspberry Pi 5" in (copy / "report.html").read_text()


def test_budget_failure_has_its_own_exit_code(built, tmp_path):
    run, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["budget"]["model_size_mb"] = 0.001  # no artifact is that small
    (copy / "config.json").write_text(json.dumps(cfg))
    p = run_cli("budget", copy)
    assert p.returncode == EXIT_BUDGET_FAILED, p.stderr[-2000:]
    verdict = json.loads((copy / "budget" / "rpi4.json").read_text())
    line = next(x for x in verdict["lines"] if x["name"] == "model_size_mb")
    assert not line["passed"] and line["advice"]


def test_corrupt_model_file_is_a_one_line_error(built, tmp_path):
    run, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "model.pt").write_bytes(b"\x00garbage")
    p = run_cli("export", copy)
    assert p.returncode == EXIT_BAD_INPUT
    assert "corrupt" in p.stderr and "Traceback" not in p.stderr
    errors = [line for line in p.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("edgeprune: error:")


@pytest.mark.parametrize("args,config,match", [
    (["--target", "rpi9"], None, "unknown target"),
    ([], "model = \n", "malformed TOML"),
    ([], "[train]\nepochz = 1\n", "unknown key 'train.epochz'"),
    (["--dataset", "fashion-mnist", "--data-dir", "{tmp}/nowhere"], None, "apt-get install dataset-fashion-mnist"),
    (["--model", "vgg99"], None, "unknown model"),
    (["--method", "nope"], None, "unknown method"),
])
def test_bad_input_exit_2_one_line_no_run_folder(tmp_path, args, config, match):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    extra = []
    if config is not None:
        (tmp_path / "bad.toml").write_text(config)
        extra = ["--config", tmp_path / "bad.toml"]
    out = tmp_path / "runs"
    p = run_cli("build", *args, *extra, "--output", out)
    assert p.returncode == EXIT_BAD_INPUT, p.stderr
    assert match.lower() in p.stderr.lower()
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir()), "a partial run folder was left behind"


def test_methods_lists_every_method_with_its_options(capsys):
    from edgeprune.cli import main
    from edgeprune.methods import list_methods

    assert main(["methods"]) == 0  # in-process: the module's entry point without a second torch import
    out = capsys.readouterr().out
    for name in list_methods():
        assert any(line.startswith(f"{name}  [") for line in out.splitlines()), name
    assert "gamma" in out and "0.05" in out and "run's train.epochs" in out
    assert main(["methods", "--json"]) == 0
    infos = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert list(infos) == list_methods() and infos["pl-gates"]["trains"] and not infos["l1"]["trains"]
    assert {o["name"]: o["default"] for o in infos["pl-gates"]["options"]}["kappa_every"] == 50


def test_method_options_from_the_command_line_override_the_config(tmp_path):
    from edgeprune import config
    from edgeprune.cli import _overrides, make_parser

    (tmp_path / "c.toml").write_text("[method.pl-gates]\ngamma = 0.2\nepochs = 3\n")
    a = make_parser().parse_args(["build", "--method", "pl-gates", "--method-option", "epochs=1",
                                  "--method-option", "branches=false"])
    cfg = config.resolve(tmp_path / "c.toml", _overrides(a))
    assert cfg["method_options"] == {"gamma": 0.2, "epochs": 1, "branches": False}


@pytest.mark.parametrize("args,config,match", [
    (["--method", "pl-gates", "--method-option", "gama=1"], None,
     "method 'pl-gates' has no option(s) ['gama']; options: batch_size"),
    (["--method-option", "gamma"], None, "write KEY=VALUE"),
    (["--method", "l1", "--method-option", "gamma=0"], None, "method 'l1' has no option(s) ['gamma']"),
    (["--method", "pl-gates"], "[method.pl-gates]\ngamma = -1\n", "method 'pl-gates' option gamma=-1: expected a value >= 0"),
])
def test_bad_method_options_exit_2_one_line_no_run_folder(tmp_path, capsys, args, config, match):
    from edgeprune.cli import main

    extra = []
    if config is not None:
        (tmp_path / "bad.toml").write_text(config)
        extra = ["--config", str(tmp_path / "bad.toml")]
    out = tmp_path / "runs"
    assert main(["build", *args, *extra, "--output", str(out)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_targets_list_and_show():
    p = run_cli("targets")
    assert p.returncode == 0
    for name in ["rpi4", "rpi5", "jetson-nano", "jetson-orin-nano", "android-mid", "android-flagship"]:
        assert name in p.stdout
    p = run_cli("targets", "show", "rpi5")
    assert p.returncode == 0 and "Cortex-A76" in p.stdout and "budget" in p.stdout


def test_help_explains_options():
    p = run_cli("build", "--help")
    assert p.returncode == 0
    for opt in ["--target", "--config", "--flops-keep", "--seed", "--remote", "--port", "--identity", "--force"]:
        assert opt in p.stdout
    p = run_cli("bench", "--help")
    assert p.returncode == 0
    text = " ".join(p.stdout.split())
    for opt in ["--remote", "--port", "--identity", "--adb", "--benchmark-binary", "user@host:port"]:
        assert opt in text
    assert "UNTESTED on a real phone" in text and "recheck the budget and rewrite the report" in text
    p = run_cli("calibrate", "--help")
    assert p.returncode == 0 and "--host" in p.stdout and "--port" in p.stdout


def test_targets_lists_user_profiles_in_the_working_directory(tmp_path):
    src = (Path(__file__).resolve().parents[1] / "edgeprune" / "targets" / "rpi5.toml").read_text()
    (tmp_path / "rpi5-measured.toml").write_text(src.replace('name = "rpi5"', 'name = "rpi5-measured"'))
    p = run_cli("targets", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    line = next(x for x in p.stdout.splitlines() if x.startswith("rpi5-measured"))
    assert "rpi5-measured.toml" in line
    p = run_cli("targets", "show", "rpi5-measured", cwd=tmp_path)
    assert p.returncode == 0 and "rpi5-measured" in p.stdout


def test_calibrate_needs_a_device_or_host():
    p = run_cli("calibrate", "--target", "rpi4")
    assert p.returncode == EXIT_BAD_INPUT and "--remote" in p.stderr and "--host" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
