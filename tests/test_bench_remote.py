"""measure_remote / calibrate_remote against a REAL sshd started on 127.0.0.1 for the test.

The "device" is this machine: sshd runs as the current user with a throw-away host key, authorized_keys and
config in a temp dir (no system file is touched), and the device python is this venv's interpreter.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeprune.bench import loopback
from edgeprune.bench.remote import (RemoteError, calibrate_remote, measure_adb, measure_remote, parse_benchmark_model,
                                    split_host)
from edgeprune.errors import ConfigError, InputError
from edgeprune.targets import load_target

from .conftest import run_cli

pytestmark = pytest.mark.skipif(not loopback.available(), reason="OpenSSH server (/usr/sbin/sshd) is not installed")
_free_port = loopback.free_port


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    try:
        with loopback.loopback_sshd(tmp_path_factory.mktemp("sshd"), extra_keys=("other_key",)) as server:
            yield server
    except RuntimeError as e:  # the server did not come up: a failure of this machine, said in full
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 1, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                           helper.make_node("Relu", ["c"], ["y"])], "tiny",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    p = d / "tiny model.onnx"  # a space: the remote side must quote
    onnx.save(m, str(p))
    return p


def test_measure_remote_real_sshd(sshd, tiny_onnx):
    before = set(Path("/tmp").glob("edgeprune-bench.*"))
    r = measure_remote(tiny_onnx, sshd["host"], threads=1, runs=20, warmup=3, repeats=2, **sshd["ssh"])
    assert r["source"] == "measured" and r["where"] == sshd["host"]
    assert r["runtime"] == "onnxruntime" and r["threads"] == 1 and r["repeats"] == 2 and len(r["raw"]) == 2
    assert all(len(x["runs_ms"]) == 20 for x in r["raw"])
    assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert r["peak_memory_mb"] > r["runtime_footprint_mb"] > 5
    assert r["inputs"][0]["shape"] == [1, 1, 8, 8]
    assert r["model"] == "tiny model.onnx"
    assert r["machine"]["cores"] == os.cpu_count()
    # the device's temp dir is gone
    assert set(Path("/tmp").glob("edgeprune-bench.*")) <= before
    # the host key was accepted (first use) into the given known_hosts file
    host_pub = (sshd["dir"] / "host_key.pub").read_text().split()[1]
    assert host_pub in Path(sshd["ssh"]["known_hosts"]).read_text()


def test_auth_failure(sshd, tiny_onnx):
    ssh = dict(sshd["ssh"], identity=str(sshd["dir"] / "other_key"))
    with pytest.raises(RemoteError) as e:
        measure_remote(tiny_onnx, sshd["host"], runs=2, warmup=0, **ssh)
    msg = str(e.value)
    assert "refused" in msg and "authorized_keys" in msg and "\n" not in msg


def test_unreachable_host(sshd, tiny_onnx):
    ssh = dict(sshd["ssh"], port=_free_port())
    with pytest.raises(RemoteError) as e:
        measure_remote(tiny_onnx, sshd["host"], runs=2, warmup=0, connect_timeout=3, **ssh)
    assert "cannot reach" in str(e.value) and "\n" not in str(e.value)


def test_missing_python_on_device(sshd, tiny_onnx):
    ssh = dict(sshd["ssh"], python="/nonexistent/python3")
    with pytest.raises(RemoteError, match="not found on"):
        measure_remote(tiny_onnx, sshd["host"], runs=2, warmup=0, **ssh)


def test_missing_runtime_on_device(sshd, tmp_path):
    # a python that has numpy but no TFLite interpreter: hide ai_edge_litert via an -I -S isolated interpreter
    # with only numpy's site dir would be fragile; use a wrapper that blocks the runtime imports instead.
    wrapper = tmp_path / "py_without_runtimes"
    wrapper.write_text(
        "#!/bin/sh\nexec " + sys.executable + " -c \"import sys, runpy\n"
        "class B:\n def find_spec(self, n, p=None, t=None):\n"
        "  if n.split('.')[0] in ('ai_edge_litert','tflite_runtime','tensorflow','onnxruntime'): raise ImportError(n)\n"
        "sys.meta_path.insert(0, B()); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')\" \"$@\"\n")
    wrapper.chmod(0o755)
    m = tmp_path / "m.tflite"
    m.write_bytes(b"not a real model")
    with pytest.raises(RemoteError) as e:
        measure_remote(m, sshd["host"], runs=2, warmup=0, **dict(sshd["ssh"], python=str(wrapper)))
    assert "missing runtime" in str(e.value) and "ai-edge-litert" in str(e.value)


def test_calibrate_remote_writes_measured_profile(sshd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a built-in profile's measured copy goes to the working directory
    res = calibrate_remote(sshd["host"], "rpi4", threads=1, runs=3, warmup=1, repeats=1, **sshd["ssh"])
    out = tmp_path / "rpi4-measured.toml"
    assert res["profile"] == str(out) and out.is_file()
    t = load_target("rpi4-measured")  # loadable by name from the working directory
    assert t.name == "rpi4-measured" and t.threads == 1 and t.source_path == str(out)
    for key, lo, hi in (("sustained_fp32_gflops", 1, 2000), ("sustained_1t_fp32_gflops", 1, 2000),
                        ("sustained_int8_gops", 0.5, 8000), ("mem_bandwidth_gbs", 0.5, 500),
                        ("per_op_overhead_us", 0.01, 200)):
        f = t.device[key]
        assert f.basis == "measured" and sshd["host"] in f.source and lo < f.value < hi, (key, f)
    assert t.device["sustained_fp32_gflops"].note and "15.8" in t.device["sustained_fp32_gflops"].note
    assert t.device["peak_fp32_gflops"] == load_target("rpi4").device["peak_fp32_gflops"]  # spec kept
    assert t.device["cores"].value == os.cpu_count() and t.device["cores"].basis == "measured"
    assert t.device["clock_ghz"].basis == "spec"  # untouched facts keep their basis
    assert t.budget == load_target("rpi4").budget
    assert res["derived"]["sustained_fp32_gflops"] == pytest.approx(t.fact("sustained_fp32_gflops"), rel=1e-3)
    from edgeprune.targets import list_targets

    assert "rpi4-measured" in list_targets()


def test_ssh_config_port_is_not_overridden(sshd, tiny_onnx, tmp_path):
    """Without a port no -p is passed, so the Port of an ssh config file applies (here given with -F)."""
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host 127.0.0.1\n  Port {sshd['ssh']['port']}\n")
    ssh = dict(sshd["ssh"], port=None, ssh_config=cfg)  # raw "-F" flags are refused in ssh_options (SECURITY.md)
    r = measure_remote(tiny_onnx, sshd["host"], runs=3, warmup=0, repeats=1, **ssh)
    assert r["where"] == sshd["host"] and r["p50_ms"] > 0


def test_host_with_port_suffix(sshd, tiny_onnx):
    ssh = dict(sshd["ssh"], port=None)
    r = measure_remote(tiny_onnx, f"{sshd['host']}:{sshd['ssh']['port']}", runs=3, warmup=0, repeats=1, **ssh)
    assert r["p50_ms"] > 0


def test_split_host():
    assert split_host("pi@rpi") == ("pi@rpi", None)
    assert split_host("pi@10.0.0.5:2222") == ("pi@10.0.0.5", 2222)
    assert split_host("pi@10.0.0.5:2222", 22) == ("pi@10.0.0.5", 22)  # an explicit port wins
    assert split_host("u@[fe80::1]:2200") == ("u@fe80::1", 2200)
    for bad in ("pi@rpi:http", "pi@rpi:70000", "-oProxyCommand=x", "pi @rpi"):
        with pytest.raises(InputError):
            split_host(bad)


def test_cli_bench_on_a_device_over_ssh(sshd, built, tmp_path):
    """`edgeprune bench RUN --target rpi5 --remote ... --port --identity` on a real run folder: the device's
    measurement lands next to the prediction in report.json, and the budget is rechecked with it."""
    run, _ = built
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    p = run_cli("bench", copy, "--target", "rpi5", "--remote", sshd["host"], "--port", sshd["ssh"]["port"],
                "--identity", sshd["ssh"]["identity"], "--remote-python", sys.executable,
                "--ssh-option", f"UserKnownHostsFile={sshd['ssh']['known_hosts']}")
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads((copy / "report.json").read_text())
    assert report["target"]["name"] == "rpi5"
    for art in report["artifacts"]:
        lat = art["latency"]
        assert lat["device"]["source"] == "measured" and lat["device"]["where"] == sshd["host"]
        assert lat["device"]["p50_ms"] > 0 and lat["device"]["p90_ms"] >= lat["device"]["p50_ms"]
        assert lat["predicted"]["source"] == "predicted" and lat["predicted"]["latency_ms"] > 0
    html = (copy / "report.html").read_text()
    assert "device p50 (meas.)" in html and "Device figures: measured on" in html
    assert "Nothing was measured on a" not in html  # the "predicted only" note is gone with device numbers
    verdict = json.loads((copy / "budget" / "rpi5.json").read_text())
    p50 = next(x for x in verdict["lines"] if x["name"] == "latency_p50_ms")
    assert p50["source"] == "measured on device" and p50["where"] == sshd["host"]


def test_bad_arguments(tmp_path, tiny_onnx):
    with pytest.raises(InputError, match="not found"):
        measure_remote(tmp_path / "none.onnx", "u@h")
    with pytest.raises(InputError, match="identity"):
        measure_remote(tiny_onnx, "u@h", identity=tmp_path / "nokey")


def test_adb_commands_and_missing_adb(tmp_path):
    m = tmp_path / "m.tflite"
    m.write_bytes(b"x")
    cmds = measure_adb(m, serial="emulator-5554", threads=4, runs=30, dry_run=True,
                       benchmark_binary="/data/local/tmp/bm")["commands"]
    assert cmds[0][:4] == ["adb", "-s", "emulator-5554", "push"]
    assert cmds[1][3:5] == ["shell", "/data/local/tmp/bm"] and "--num_threads=4" in cmds[1] and "--num_runs=30" in cmds[1]
    assert cmds[2][-1] == cmds[0][-1]  # the pushed model is removed afterwards
    with pytest.raises(InputError, match="not found on PATH"):
        measure_adb(m, adb="adb-that-does-not-exist")
    with pytest.raises(InputError, match="tflite"):
        measure_adb(tmp_path / "m.onnx", dry_run=True)


# Output of real benchmark_model runs, copied from public write-ups (the format changed between versions):
# TF 2.4 on a Xiaomi Mi 11 (yolov5s fp32, 4 threads; the older "Peak memory footprint" line),
LOG_TF24 = """count=50 first=249042 curr=250889 min=247067 max=254474 avg=249684 std=1442
Inference timings in us: Init: 16242, First inference: 360262, Warmup (avg): 304586, Inference (avg): 249684
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=4.92969 overall=138.809
"""
# a RISC-V QEMU run of mobilenet_v1_1.0_224 (warm-up line first, exponent notation, "Memory footprint delta"),
LOG_QEMU = """Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Memory footprint delta from the start of the tool (MB): init=4.21094 overall=46.0859
"""
# and a recent build in Android logcat (percentiles on the count= lines; warm-up line before the timed one).
LOG_LOGCAT = """I tflite  : The input model file size (MB): 3.06409
I tflite  : Initialized session in 92.318ms.
I tflite  : count=3 first=235158 curr=200386 min=199462 max=235158 avg=211669 std=16613 p5=199462 median=200386 p95=235158
I tflite  : count=25 first=187533 curr=140990 min=140071 max=195121 avg=145528 std=13583 p5=140545 median=141253 p95=187533
I tflite  : Inference timings in us: Init: 92318, First inference: 187533, Warmup (avg): 211669, Inference (avg): 145528
I tflite  : Memory footprint delta from the start of the tool (MB): init=54.2852 overall=73.4102
"""


def test_parse_benchmark_model_real_logs():
    r = parse_benchmark_model(LOG_TF24)
    assert r["init_ms"] == pytest.approx(16.242) and r["avg_ms"] == pytest.approx(249.684)
    assert r["min_ms"] == pytest.approx(247.067) and r["std_ms"] == pytest.approx(1.442) and r["runs"] == 50
    assert r["model_footprint_mb"] == pytest.approx(138.809) and r["init_memory_mb"] == pytest.approx(4.92969)
    assert r["p50_ms"] == r["avg_ms"] and "avg" in r["p50_from"] and r["p90_ms"] == r["max_ms"]
    r = parse_benchmark_model(LOG_QEMU)
    assert r["avg_ms"] == pytest.approx(2950.34) and r["warmup_avg_ms"] == pytest.approx(3512.39)
    assert r["runs"] == 50 and r["max_ms"] == pytest.approx(3189.954)  # the timed line, not the warm-up one
    assert r["model_footprint_mb"] == pytest.approx(46.0859)
    r = parse_benchmark_model(LOG_LOGCAT)
    assert r["runs"] == 25 and r["min_ms"] == pytest.approx(140.071)  # not the count=3 warm-up line
    assert r["p50_ms"] == pytest.approx(141.253) and r["p50_from"] == "median"
    assert r["p5_ms"] == pytest.approx(140.545) and r["p95_ms"] == r["p90_ms"] == pytest.approx(187.533)
    assert r["avg_ms"] == pytest.approx(145.528) and r["model_footprint_mb"] == pytest.approx(73.4102)
    assert "p95" in r["p90_from"]
    with pytest.raises(ConfigError, match="not understood"):
        parse_benchmark_model("ERROR: Could not open 'x.tflite'.\n")
