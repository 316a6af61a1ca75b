"""measure_remote / calibrate_remote against a REAL sshd started on 127.0.0.1 for the test.

The "device" is this machine: sshd runs as the current user with a throw-away host key, authorized_keys and
config in a temp dir (no system file is touched), and the device python is this venv's interpreter.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeprune.bench.remote import RemoteError, calibrate_remote, measure_adb, measure_remote, parse_benchmark_model
from edgeprune.errors import InputError
from edgeprune.targets import load_target

SSHD = "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None,
                                reason="OpenSSH server (/usr/sbin/sshd) is not installed")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    d = tmp_path_factory.mktemp("sshd")
    d.chmod(0o700)
    _keygen(d / "host_key")
    _keygen(d / "client_key")
    _keygen(d / "other_key")
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    port = _free_port()
    cfg = d / "sshd_config"
    user = os.environ.get("USER") or __import__("getpass").getuser()
    cfg.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PubkeyAuthentication yes\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        f"AllowUsers {user}\nSubsystem sftp internal-sftp\nLogLevel ERROR\n"
    )
    # sshd started by root insists on its privilege-separation dir (Debian creates it when the service starts);
    # create it if missing and remove it again afterwards. Nothing else outside the temp dir is touched.
    privsep = Path("/run/sshd")
    made_privsep = False
    if os.geteuid() == 0 and not privsep.exists():
        privsep.mkdir(mode=0o755)
        made_privsep = True
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if proc.poll() is not None:
                pytest.fail(f"sshd exited: {(d / 'sshd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        ssh = {"port": port, "identity": str(d / "client_key"), "known_hosts": str(d / "known_hosts"),
               "python": sys.executable}
        yield {"host": f"{user}@127.0.0.1", "ssh": ssh, "dir": d, "proc": proc}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if made_privsep:
            shutil.rmtree(privsep, ignore_errors=True)


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


def test_calibrate_remote_writes_measured_profile(sshd, tmp_path):
    out = tmp_path / "rpi4-measured.toml"
    res = calibrate_remote(sshd["host"], "rpi4", out_path=out, threads=1, runs=3, warmup=1, repeats=1,
                           **sshd["ssh"])
    t = load_target(out)
    assert t.name == "rpi4-measured" and t.threads == 1
    f = t.device["peak_fp32_gflops"]
    assert f.basis == "measured" and sshd["host"] in f.source
    assert 1 < f.value < 2000  # achieved fp32 GFLOP/s of one core of this host
    bw = t.device["mem_bandwidth_gbs"]
    assert bw.basis == "measured" and 0.5 < bw.value < 500
    assert t.device["cores"].value == os.cpu_count() and t.device["cores"].basis == "measured"
    assert t.device["clock_ghz"].basis == "spec"  # untouched facts keep their basis
    assert t.budget == load_target("rpi4").budget
    assert res["derived"]["peak_fp32_gflops"] == pytest.approx(f.value, rel=1e-3)


def test_bad_arguments(tmp_path, tiny_onnx):
    with pytest.raises(InputError, match="not found"):
        measure_remote(tmp_path / "none.onnx", "u@h")
    with pytest.raises(InputError, match="identity"):
        measure_remote(tiny_onnx, "u@h", identity=tmp_path / "nokey")


def test_adb_commands_and_missing_adb(tmp_path):
    m = tmp_path / "m.tflite"
    m.write_bytes(b"x")
    cmds = measure_adb(m, serial="emulator-5554", threads=4, runs=30, dry_run=True)["commands"]
    assert cmds[0][:4] == ["adb", "-s", "emulator-5554", "push"]
    assert "--num_threads=4" in cmds[1] and "--num_runs=30" in cmds[1]
    with pytest.raises(InputError, match="not found on PATH"):
        measure_adb(m, adb="adb-that-does-not-exist")


def test_parse_benchmark_model_log():
    log = ("count=50 first=1234 curr=1100 min=1000 max=1500 avg=1100.5 std=50\n"
           "Inference timings in us: Init: 5000, First inference: 1234, Warmup (avg): 1150.2, Inference (avg): 1100.5\n"
           "Peak memory footprint (MB): init=3.5 overall=7.25\n")
    r = parse_benchmark_model(log)
    assert r["init_ms"] == 5.0 and r["avg_ms"] == pytest.approx(1.1005) and r["peak_memory_mb"] == 7.25
    assert r["min_ms"] == 1.0 and r["std_ms"] == 0.05
