"""Run folders are safe to share and to rerun (issue 14): a folder's recorded code is never run, one writer
at a time (two real builds on one folder), a changed stage output reruns every later stage, stage commands
on a folder without the results they need fail in one line. Every test runs the real `edgeprune` command."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from edgeprune.pipeline import EXIT_BAD_INPUT, EXIT_OK
from edgeprune.runfolder import HOLDER_FILE, RunFolder
from edgeprune.stages import STAGE_NAMES

from .conftest import REPO, run_cli

#: the cheapest full build: 300 digits, 1 epoch, no fine-tuning, ONNX only, short host benchmark
FAST_TOML = "[bench]\nruns = 5\nwarmup = 1\nrepeats = 1\n[budget]\nmax_accuracy_drop = 100.0\n"
ARGS = ("--data-limit", "300", "--epochs", "1", "--finetune-epochs", "0", "--formats", "onnx")


def _env(**extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _build_cmd(work, name="base", *extra):
    return [sys.executable, "-m", "edgeprune.cli", "build", "--config", str(work / "fast.toml"), *ARGS,
            "--output", str(work / "runs"), "--name", name, *extra]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two real `edgeprune build` processes on one new folder: the second starts once the first holds the lock."""
    work = tmp_path_factory.mktemp("trust")
    (work / "fast.toml").write_text(FAST_TOML)
    run = work / "runs" / "base"
    first = subprocess.Popen(_build_cmd(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env(), stdin=subprocess.DEVNULL)
    while not (run / HOLDER_FILE).exists() and first.poll() is None:  # wait for a state, not for a time
        time.sleep(0.02)
    second = subprocess.Popen(_build_cmd(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(), stdin=subprocess.DEVNULL)
    outs = [(p.wait(timeout=900), *p.communicate()) for p in (first, second)]
    return work, run, outs


@pytest.fixture
def copy(pair, tmp_path):
    """A copy of the built folder, at runs/base under tmp_path (so `build --name base` resumes it)."""
    work, run, _ = pair
    (tmp_path / "fast.toml").write_text(FAST_TOML)
    dst = tmp_path / "runs" / "base"
    shutil.copytree(run, dst)
    return dst


def _one_line_error(p, *needles, code=EXIT_BAD_INPUT, after_progress=False):
    """Exit ``code`` with one error line holding every needle: nothing else on stderr, or (``after_progress``)
    only the stage lines of the work done before the error (✓ skipped, ↻ stale, ▶ started) and the build's
    one-line pruning target ("rpi4: keep 60% of MACs ...")."""
    assert p.returncode == code, p.stderr[-2000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    lines = p.stderr.strip().splitlines()
    if after_progress:
        assert all(ln[:1] in "✓↻▶" or ln.startswith("  ") or re.match(r"^[\w.-]+: .*keep ~?\d+% of MACs", ln)
                   for ln in lines[:-1]), p.stderr[-2000:]  # stage lines and the pruning target
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("edgeprune: error:"), p.stderr[-2000:]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------- one writer at a time

def test_two_builds_on_one_folder_end_complete_and_the_second_waited(pair):
    work, run, ((rc1, _, err1), (rc2, _, err2)) = pair
    assert rc1 == EXIT_OK, err1[-3000:]
    # the second waited for the first (and then found every stage done) or gave up with exit 2 naming it
    assert "is in use by pid" in err2, err2[-2000:]
    assert rc2 in (EXIT_OK, EXIT_BAD_INPUT), err2[-2000:]
    if rc2 == EXIT_OK:
        assert all(f"✓ {s}: up to date" in err2 for s in STAGE_NAMES), err2[-2000:]
    # the end state is valid and complete: every stage recorded, its outputs and inputs hash as recorded
    folder = RunFolder(run)
    assert {s: folder.stale_reason(s) for s in STAGE_NAMES} == {s: None for s in STAGE_NAMES}
    bench = json.loads((run / "bench" / "rpi4.json").read_text())
    assert set(bench["artifacts"]) == {"onnx"} and json.loads((run / "budget" / "rpi4.json").read_text())["artifact"] == "onnx"
    assert (run / "dist" / "rpi4" / "model.onnx").is_file()
    assert not [p for p in run.rglob(".edgeprune-tmp-*")] and not (run / HOLDER_FILE).exists()


def test_a_held_folder_exits_2_naming_the_holder(copy):
    with RunFolder(copy).lock():
        p = _cli("report", copy, EDGEPRUNE_LOCK_TIMEOUT="0")
        _one_line_error(p, f"pid {os.getpid()} on {socket.gethostname()}", "in use")
        p = _cli("report", copy, EDGEPRUNE_LOCK_TIMEOUT="0.5")
        assert p.returncode == EXIT_BAD_INPUT, p.stderr[-2000:]
        assert "waiting up to 0.5 s" in p.stderr and "still in use by pid" in p.stderr


def test_a_dead_holders_lock_is_recovered(copy):
    """A build killed with SIGKILL never releases its lock itself: the next command still gets it."""
    code = ("import os, signal, sys; from edgeprune.runfolder import RunFolder\n"
            "cm = RunFolder(sys.argv[1]).lock(); cm.__enter__(); print('held', flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    p = subprocess.run([sys.executable, "-c", code, str(copy)], capture_output=True, text=True, env=_env(), timeout=120)
    assert p.returncode == -signal.SIGKILL and "held" in p.stdout
    assert (copy / HOLDER_FILE).exists()  # the dead holder's note is still there
    p = _cli("report", copy, EDGEPRUNE_LOCK_TIMEOUT="0")
    assert p.returncode == EXIT_OK, p.stderr[-2000:]
    assert not (copy / HOLDER_FILE).exists()


# ----------------------------------------------------------------- a rerun stage invalidates what follows

def _cli(*args, **env):
    """The real command, with extra environment variables."""
    return subprocess.run([sys.executable, "-m", "edgeprune.cli", *map(str, args)], capture_output=True, text=True,
                          env=_env(**env), stdin=subprocess.DEVNULL, timeout=600)


def _rerun_build(copy, *extra):
    work = copy.parents[1]
    return subprocess.run(_build_cmd(work, "base", *extra), capture_output=True, text=True, env=_env(),
                          stdin=subprocess.DEVNULL, timeout=900)


def test_a_replaced_stage_output_reruns_every_later_stage(copy):
    rec = json.loads((copy / "stages.json").read_text())
    bench = json.loads((copy / "bench" / "rpi4.json").read_text())
    bench["artifacts"]["onnx"]["host"]["p50_ms"] = 1e-6  # a forged, faster measurement
    (copy / "bench" / "rpi4.json").write_text(json.dumps(bench))
    p = _rerun_build(copy)
    assert p.returncode == EXIT_OK, p.stderr[-3000:]
    for s in ("train", "prune", "compact", "finetune", "export"):
        assert f"✓ {s}: up to date" in p.stderr
    assert "↻ bench: stale (its output bench/rpi4.json is missing or changed)" in p.stderr
    for s in ("bench", "budget", "report", "package"):
        assert f"▶ {s}" in p.stderr, s
    new = json.loads((copy / "stages.json").read_text())
    assert new["export"] == rec["export"]
    assert new["budget"]["inputs"]["bench/rpi4.json"] != rec["budget"]["inputs"]["bench/rpi4.json"]
    assert json.loads((copy / "bench" / "rpi4.json").read_text())["artifacts"]["onnx"]["host"]["p50_ms"] > 1e-6


@pytest.mark.slow  # reruns export, then a build
def test_a_stage_command_then_build_reruns_what_follows_it(copy):
    """`edgeprune export RUN` then `edgeprune build`: bench, budget, report and package measure and package the
    new artifacts (they consumed the old export.json), instead of exiting 0 on stale results."""
    p = run_cli("export", copy)
    assert p.returncode == EXIT_OK, p.stderr[-2000:]
    p = _rerun_build(copy)
    assert p.returncode == EXIT_OK, p.stderr[-3000:]
    assert "✓ export: up to date" in p.stderr and "↻ bench: stale (its input export.json changed)" in p.stderr
    assert all(f"▶ {s}" in p.stderr for s in ("bench", "budget", "report", "package"))
    folder = RunFolder(copy)
    assert all(folder.stale_reason(s) is None for s in STAGE_NAMES)


@pytest.mark.slow  # reruns export, then a build
def test_a_failed_stage_leaves_no_record_a_rerun_trusts(copy):
    """export fails half-way (its model file is gone): its record is dropped, so a build reruns it."""
    (copy / "model.pt").write_bytes(b"\x00truncated")
    p = run_cli("export", copy)
    _one_line_error(p, "model.pt", "corrupt", after_progress=True)
    assert "export" not in json.loads((copy / "stages.json").read_text())
    p = _rerun_build(copy)
    assert p.returncode == EXIT_OK, p.stderr[-3000:]
    assert "↻ finetune: stale (its output model.pt is missing or changed)" in p.stderr
    assert all(f"▶ {s}" in p.stderr for s in ("finetune", "export", "bench", "budget", "report", "package"))


# ----------------------------------------------------------------- stage commands need their inputs

@pytest.mark.parametrize("cmd,target,missing", [("budget", "rpi5", "bench/rpi5.json"),
                                               ("package", "jetson-nano", "bench/jetson-nano.json")])
def test_stage_for_a_target_without_its_bench(copy, cmd, target, missing):
    p = run_cli(cmd, copy, "--target", target)
    _one_line_error(p, missing, f"edgeprune bench {copy} --target {target}")
    assert not (copy / "budget" / f"{target}.json").exists() and not (copy / "dist" / target).exists()


# ----------------------------------------------------------------- a folder's code is never run

EVIL = """from pathlib import Path
Path({marker!r}).write_text("imported")
def make(*args, **kwargs):
    Path({marker!r}).write_text("called")
    from edgeprune.models import cnn
    return cnn((1, 8, 8), 10)
def metric(outputs, targets):
    Path({marker!r}).write_text("called")
    return 0.0
def data():
    Path({marker!r}).write_text("called")
"""


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "MARKER"
    (tmp_path / "evil.py").write_text(EVIL.format(marker=str(marker)))
    return tmp_path / "evil.py", marker


def _edit_config(run, **changes):
    cfg = json.loads((run / "config.json").read_text())
    for k, v in changes.items():
        if isinstance(v, dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    (run / "config.json").write_text(json.dumps(cfg))


FLAG = {"model": "--model FILE:factory", "metric": "--metric FILE:function", "dataset": "--dataset FILE:function"}


@pytest.mark.parametrize("key,cmd", [("model", c) for c in STAGE_NAMES if c != "compact"]
                         + [("metric", "export"), ("metric", "budget"), ("dataset", "train"), ("dataset", "bench")])
def test_config_naming_code_is_never_imported(copy, evil, key, cmd):
    path, marker = evil
    fn, flag = {"model": "make", "metric": "metric", "dataset": "data"}[key], FLAG[key]
    _edit_config(copy, **{key: f"{path}:{fn}"})
    p = run_cli(cmd, copy)
    _one_line_error(p, f"{path}:{fn}", f"edgeprune {cmd} {copy} {flag}", "SECURITY.md")
    assert not marker.exists(), "the run folder's code ran"


def _forge_checkpoint(run, name, spec):
    """Point a checkpoint's arch at ``spec`` and re-record its hashes so the folder still looks complete."""
    blob = torch.load(run / name, weights_only=True)
    blob["arch"]["model"] = spec
    torch.save(blob, run / name)
    folder = RunFolder(run)
    stages = json.loads((run / "stages.json").read_text())
    digest = folder.sha256(name)
    for rec in stages.values():
        if name in rec["files"]:
            rec["files"][name]["sha256"] = digest
        if name in rec["inputs"]:
            rec["inputs"][name] = digest
    (run / "stages.json").write_text(json.dumps(stages))
    assert folder.stale_reason("package") is None  # the forgery is consistent


def test_checkpoint_naming_code_is_never_imported_by_a_stage(copy, evil):
    path, marker = evil
    _forge_checkpoint(copy, "model.pt", f"{path}:make")
    p = run_cli("export", copy)
    _one_line_error(p, f"checkpoint {copy / 'model.pt'}", f"{path}:make", "--model FILE:factory", after_progress=True)
    assert not marker.exists()


def test_checkpoint_naming_code_is_never_imported_on_resume(copy, evil):
    """`edgeprune build` on a received folder whose dense.pt names code: prune reruns (other --flops-keep) and
    must rebuild the dense model; the checkpoint's code is refused, the user's own config is used."""
    path, marker = evil
    _forge_checkpoint(copy, "dense.pt", f"{path}:make")
    p = _rerun_build(copy, "--flops-keep", "0.6")
    _one_line_error(p, f"checkpoint {copy / 'dense.pt'}", f"{path}:make", after_progress=True)
    assert "✓ train: up to date" in p.stderr and "▶ prune" in p.stderr  # it got as far as loading dense.pt
    assert not marker.exists()


def test_code_the_user_names_runs_and_must_be_the_same_function(copy, evil):
    path, marker = evil
    _forge_checkpoint(copy, "dense.pt", f"{path}:make")
    _edit_config(copy, model=f"{path}:make")
    p = run_cli("prune", copy, "--model", f"{path}:other")
    _one_line_error(p, "names function 'other'", f"{path}:make")
    assert not marker.exists()
    # the code the user names must be the bytes the run was built with (the train record's sources)
    stages = json.loads((copy / "stages.json").read_text())
    stages["train"]["sources"] = dict(stages["train"]["sources"], model="sha256:" + "0" * 64)
    (copy / "stages.json").write_text(json.dumps(stages))
    p = run_cli("prune", copy, "--model", f"{path}:make")
    _one_line_error(p, "the model code you named differs from the code", "edgeprune build")
    assert not marker.exists()
    stages["train"]["sources"]["model"] = None  # as recorded for the built-in cnn
    (copy / "stages.json").write_text(json.dumps(stages))
    p = run_cli("prune", copy, "--model", f"{path}:make")  # named by the person typing: it runs
    assert p.returncode == EXIT_OK, p.stderr[-2000:]
    assert marker.read_text() == "called"


def test_ssh_options_of_a_folder_are_never_used(copy, tmp_path):
    marker = tmp_path / "PROXY"
    _edit_config(copy, bench={"remote": "nobody@127.0.0.1", "port": 2, "python": f"touch {marker}; python3",
                              "ssh_options": [f"ProxyCommand=touch {marker}"]})
    p = run_cli("bench", copy)
    assert p.returncode == EXIT_OK, p.stderr[-2000:]
    assert not marker.exists()
    assert "device" not in json.loads((copy / "bench" / "rpi4.json").read_text())["artifacts"]["onnx"]


@pytest.mark.parametrize("opt", ["ProxyCommand=touch x", "LocalCommand=id", "PermitLocalCommand=yes",
                                 "Include=x", "-oProxyCommand=id", "ConnectTimeout=5 ProxyCommand=id"])
def test_dangerous_ssh_options_are_refused(copy, tmp_path, opt):
    p = run_cli("bench", copy, "--remote", "nobody@127.0.0.1", f"--ssh-option={opt}")
    _one_line_error(p, "ssh option", repr(opt))
    (tmp_path / "ssh.toml").write_text(f"[bench]\nssh_options = [{json.dumps(opt)}]\n")
    out = tmp_path / "new"
    p = run_cli("build", "--config", tmp_path / "ssh.toml", "--output", out)
    _one_line_error(p, "ssh option")
    assert not out.exists()


def test_values_from_a_device_are_html_escaped_in_the_report(copy):
    """A device (or a forged bench file) answers with markup: report.html shows it as text."""
    bench = json.loads((copy / "bench" / "rpi4.json").read_text())
    bench["artifacts"]["onnx"]["device"] = {
        "source": "measured", "where": "<img src=x onerror=alert(1)>", "p50_ms": 1.5, "p90_ms": 2.0,
        "threads": "<script>alert('threads')</script>", "runs": "<i>5</i>", "repeats": 1, "model_footprint_mb": 1.0}
    (copy / "bench" / "rpi4.json").write_text(json.dumps(bench))
    p = run_cli("report", copy)
    assert p.returncode == EXIT_OK, p.stderr[-2000:]
    html = (copy / "report.html").read_text()
    assert "Device figures: measured on" in html
    for raw in ("<script>alert('threads')</script>", "<img src=x onerror=alert(1)>", "<i>5</i>"):
        assert raw not in html
    assert "&lt;script&gt;alert(&#x27;threads&#x27;)&lt;/script&gt;" in html and "&lt;img src=x" in html
