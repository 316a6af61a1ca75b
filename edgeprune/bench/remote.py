"""Measure on a real device: over ssh (Raspberry Pi, Jetson, any Linux board) or adb (Android).

ssh: plain OpenSSH ``ssh``/``scp`` binaries via subprocess, ``BatchMode=yes`` (never prompts), host keys
accepted on first use (``StrictHostKeyChecking=accept-new``) into the user's or a given known_hosts file.
The standalone ``runner.py`` and the model are copied to a fresh temp dir on the device, run with the device's
python (numpy + onnxruntime or a TFLite interpreter must be installed there), the JSON is read back and the
temp dir removed.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from ..errors import ConfigError, EdgepruneError, InputError
from .host import RUNNER, summarize


class RemoteError(EdgepruneError):
    """The device cannot be reached, refuses the login, or lacks what the runner needs."""


def _ssh_base(port: int, identity, known_hosts, ssh_options: Sequence[str], connect_timeout: int) -> list:
    opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}", "-o", "StrictHostKeyChecking=accept-new",
            "-o", "LogLevel=ERROR"]
    if known_hosts is not None:
        opts += ["-o", f"UserKnownHostsFile={known_hosts}"]
    if identity is not None:
        if not Path(identity).is_file():
            raise InputError(f"ssh identity file {identity} not found; pass the private key of the device login")
        opts += ["-i", str(identity), "-o", "IdentitiesOnly=yes"]
    for o in ssh_options:
        opts += [o] if str(o).startswith("-") else ["-o", str(o)]
    return opts


class _Session:
    def __init__(self, host, port, identity, known_hosts, ssh_options, connect_timeout, timeout):
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise InputError(f"`{tool}` not found on PATH; install the OpenSSH client (apt install openssh-client)")
        if not host or host.startswith("-"):
            raise InputError(f"bad ssh host {host!r}; use user@host")
        self.host, self.port, self.timeout = host, int(port), timeout
        self.opts = _ssh_base(port, identity, known_hosts, ssh_options, connect_timeout)

    def _explain(self, rc: int, stderr: str, what: str) -> RemoteError:
        err = " ".join(stderr.strip().split())[-300:] or "no output"
        low = err.lower()
        where = f"{self.host} port {self.port}"
        if "permission denied" in low or "too many authentication failures" in low:
            return RemoteError(f"ssh login to {where} refused ({err}); install your public key in the device's "
                               "~/.ssh/authorized_keys or pass identity=PATH")
        if "host key verification failed" in low or "remote host identification has changed" in low:
            return RemoteError(f"host key of {where} does not match known_hosts ({err}); check the device and "
                               "remove the stale line with `ssh-keygen -R HOST`")
        if rc == 255 and any(s in low for s in ("connection refused", "no route", "timed out", "could not resolve",
                                                 "name or service not known", "network is unreachable",
                                                 "connection closed", "connection reset")):
            return RemoteError(f"cannot reach {where} ({err}); check the address, port and that sshd runs on it")
        if rc == 255:
            return RemoteError(f"ssh to {where} failed ({err}); check the address and your ssh options")
        return RemoteError(f"{what} on {self.host} failed (exit {rc}): {err}")

    def ssh(self, command: str, what: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = ["ssh", *self.opts, "-p", str(self.port), self.host, command]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{what} on {self.host} took longer than {self.timeout:.0f} s; raise timeout= or "
                              "use fewer runs") from None
        if check and p.returncode != 0:
            raise self._explain(p.returncode, p.stderr, what)
        return p

    def put(self, files: Sequence, remote_dir: str):
        cmd = ["scp", "-q", *self.opts, "-P", str(self.port), *[str(f) for f in files],
               f"{self.host}:{remote_dir}/"]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"copying files to {self.host} took longer than {self.timeout:.0f} s") from None
        if p.returncode != 0:
            raise self._explain(p.returncode, p.stderr, "scp")


def _run_on_device(sess: _Session, remote_dir: str, model_name: str, python: str, threads: int, runs: int,
                   warmup: int, i: int) -> dict:
    out = f"{remote_dir}/out{i}.json"
    cmd = (f"cd {shlex.quote(remote_dir)} && {shlex.quote(python)} runner.py {shlex.quote(model_name)} "
           f"--runs {int(runs)} --warmup {int(warmup)} --threads {int(threads)} --json {shlex.quote(out)} "
           f">/dev/null && cat {shlex.quote(out)}")
    p = sess.ssh(cmd, "runner", check=False)
    if p.returncode == 0:
        try:
            return json.loads(p.stdout)
        except json.JSONDecodeError:
            raise RemoteError(f"runner on {sess.host} printed no valid JSON; run it by hand: "
                              f"{python} runner.py {model_name}") from None
    if p.returncode == 255:
        raise sess._explain(p.returncode, p.stderr, "runner")
    last = (p.stderr.strip().splitlines() or ["no output"])[-1]
    if p.returncode == 127 or "not found" in last and python in last:
        raise RemoteError(f"{python!r} not found on {sess.host}; install python3 there or pass python=PATH")
    if p.returncode == 3:
        raise RemoteError(f"missing runtime on {sess.host}: {last.replace('runner: error: ', '')}")
    if "No module named 'numpy'" in p.stderr:
        raise RemoteError(f"numpy is missing on {sess.host}; run `{python} -m pip install numpy` there")
    raise RemoteError(f"runner on {sess.host} failed (exit {p.returncode}): {last}")


def measure_remote(path, host: str, *, port: int = 22, identity=None, python: str = "python3", threads: int = 1,
                   runs: int = 50, warmup: int = 10, repeats: int = 1, ssh_options: Sequence[str] = (),
                   known_hosts=None, connect_timeout: int = 10, timeout: float = 600) -> dict:
    """Benchmark ``path`` (.onnx/.tflite) on ``host`` ("user@host") over ssh.

    Each repeat is a fresh ``python runner.py`` process on the device. Returns the runner's statistics
    (median over repeats; ``raw`` holds each repeat) labelled ``{"source": "measured", "where": host}``.
    Raises :class:`RemoteError` (one line) for an unreachable host, a refused login or a missing runtime.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path} not found; export the model first")
    if path.suffix.lower() not in (".onnx", ".tflite"):
        raise InputError(f"model file {path} must end in .onnx or .tflite")
    if repeats < 1 or runs < 1 or threads < 1:
        raise InputError("repeats, runs and threads must be >= 1")
    sess = _Session(host, port, identity, known_hosts, ssh_options, connect_timeout, timeout)
    p = sess.ssh("mktemp -d /tmp/edgeprune-bench.XXXXXX", "mktemp")
    remote_dir = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    if not remote_dir.startswith("/tmp/edgeprune-bench."):
        raise RemoteError(f"could not create a temp dir on {host} (got {remote_dir!r}); check that /tmp is writable")
    raw = []
    try:
        with tempfile.TemporaryDirectory(prefix="edgeprune-remote-") as td:
            # copy under a safe name (the remote command line quotes it anyway)
            local_model = Path(td) / ("model" + path.suffix.lower())
            shutil.copyfile(path, local_model)
            sess.put([RUNNER, local_model], remote_dir)
        for i in range(repeats):
            raw.append(_run_on_device(sess, remote_dir, local_model.name, python, threads, runs, warmup, i))
    finally:
        try:
            sess.ssh(f"rm -rf {shlex.quote(remote_dir)}", "cleanup", check=False)
        except RemoteError:
            pass
    for r in raw:
        r["model"] = path.name
    out = summarize(raw)
    out.update({"source": "measured", "where": host, "machine": raw[0]["machine"], "repeats": repeats,
                "runs": runs, "raw": raw})
    return out


def calibrate_remote(host: str, target, *, out_path=None, threads: Optional[int] = None, runs: int = 10,
                     warmup: int = 3, repeats: int = 3, **ssh) -> dict:
    """Measure achieved fp32 GFLOP/s and streaming GB/s on ``host`` and write a measured profile.

    ``target``: the spec profile (name, path or Target) the device is an instance of. The device needs
    python3 + numpy + onnxruntime (the micro-benchmarks are ONNX graphs built with onnx.helper). The result is
    written as ``<name>-measured.toml`` next to ``target`` when it is a file, else in the current directory
    (or at ``out_path``) and can be passed to ``load_target``/``predict``; its ``peak_fp32_gflops`` and
    ``mem_bandwidth_gbs`` carry ``basis = "measured"``. Returns {"profile": path, "derived": ..., "raw": ...}.
    ``ssh`` keywords go to :func:`measure_remote` (port, identity, python, known_hosts, ssh_options, ...).
    """
    from ..targets import Target, load_target
    from . import microbench

    base = target if isinstance(target, Target) else load_target(target)
    th = threads or base.threads
    results = {}
    with tempfile.TemporaryDirectory(prefix="edgeprune-microbench-") as td:
        bench = microbench.build_microbench(td)
        for name in ("matmul", "stream"):
            results[name] = measure_remote(bench[name]["path"], host, threads=th, runs=runs, warmup=warmup,
                                           repeats=repeats, **ssh)
    derived = microbench.derive(bench, results)
    r0 = results["matmul"]
    prof = microbench.measured_profile(base, derived, where=host, threads=th,
                                       runtime=f"{r0['runtime']} {r0['runtime_version']}", machine=r0["machine"])
    if out_path is None:
        src = Path(base.source_path)
        builtin = Path(__file__).resolve().parents[1] / "targets"
        # next to a user's own profile; never into the installed package: the working directory
        folder = src.parent if src.is_file() and src.resolve().parent != builtin else Path.cwd()
        out_path = folder / f"{prof.name}.toml"
    out_path = Path(out_path)
    text = microbench.target_to_toml(prof)
    from ..runfolder import atomic_write_text

    atomic_write_text(out_path, text)
    load_target(out_path)  # the file must load: fail here, not later
    for r in results.values():
        r.pop("raw", None)
    return {"profile": str(out_path), "derived": derived, "raw": results, "source": "measured", "where": host}


def measure_adb(path, *, serial: Optional[str] = None, benchmark_binary: str = "/data/local/tmp/benchmark_model",
                threads: int = 4, runs: int = 50, warmup: int = 10, adb: str = "adb", dry_run: bool = False,
                timeout: float = 600) -> dict:
    """Measure a .tflite on an Android phone with LiteRT's ``benchmark_model`` over adb.

    UNTESTED WITHOUT A DEVICE: no phone was available when this was written; the command lines follow the
    LiteRT benchmark tool's documented flags but the output parsing has only been checked against its
    documented log format. It needs ``adb`` on PATH, a device in ``adb devices`` and the ``benchmark_model``
    binary for the phone's ABI already pushed to ``benchmark_binary`` (download it from the LiteRT releases).
    ``dry_run=True`` returns the adb commands without running anything. Raises InputError when adb or a
    device is missing.
    """
    path = Path(path)
    if path.suffix.lower() != ".tflite":
        raise InputError(f"{path} is not a .tflite file; benchmark_model runs TFLite models only")
    a = [adb] + (["-s", serial] if serial else [])
    remote_model = f"/data/local/tmp/{path.name}"
    cmds = [
        a + ["push", str(path), remote_model],
        a + ["shell", benchmark_binary, f"--graph={remote_model}", f"--num_threads={int(threads)}",
             f"--num_runs={int(runs)}", f"--warmup_runs={int(warmup)}", "--use_xnnpack=true",
             "--report_peak_memory_footprint=true"],
        a + ["shell", "rm", "-f", remote_model],
    ]
    if dry_run:
        return {"commands": cmds}
    if shutil.which(adb) is None:
        raise InputError(f"`{adb}` not found on PATH; install Android platform-tools to measure on a phone")
    if not path.is_file():
        raise InputError(f"model file {path} not found; export the model first")
    p = subprocess.run(a + ["get-state"], capture_output=True, text=True, timeout=30)
    if p.returncode != 0 or p.stdout.strip() != "device":
        raise InputError("no Android device attached (adb get-state failed); connect one with USB debugging on")
    outs = []
    for c in cmds:
        p = subprocess.run(c, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RemoteError(f"`{' '.join(c[:4])} ...` failed: {(p.stderr or p.stdout).strip()[-200:]}")
        outs.append(p.stdout)
    return parse_benchmark_model(outs[1]) | {"source": "measured", "where": f"adb:{serial or 'default'}"}


def parse_benchmark_model(log: str) -> dict:
    """Pull init/first/warmup/avg times (ms) and peak memory (MB) out of benchmark_model's log."""
    import re

    res: dict = {}
    m = re.search(r"Inference timings in us: Init: ([\d.]+), First inference: ([\d.]+), "
                  r"Warmup \(avg\): ([\d.e+]+), Inference \(avg\): ([\d.e+]+)", log)
    if m:
        res.update(init_ms=float(m[1]) / 1e3, first_inference_ms=float(m[2]) / 1e3,
                   warmup_avg_ms=float(m[3]) / 1e3, avg_ms=float(m[4]) / 1e3)
    m = re.search(r"count=\d+ first=\d+ curr=\d+ min=(\d+) max=(\d+) avg=([\d.e+]+) std=(\d+)", log)
    if m:
        res.update(min_ms=float(m[1]) / 1e3, max_ms=float(m[2]) / 1e3, std_ms=float(m[4]) / 1e3)
    m = re.search(r"p50=([\d.e+]+)", log)
    if m:
        res["p50_ms"] = float(m[1]) / 1e3
    m = re.search(r"Peak memory footprint \(MB\): init=([\d.e+]+) overall=([\d.e+]+)", log) or \
        re.search(r"Memory footprint delta from the start of the tool \(MB\): init=([\d.e+]+) overall=([\d.e+]+)", log)
    if m:
        res.update(init_memory_mb=float(m[1]), peak_memory_mb=float(m[2]))
    if not res:
        raise ConfigError("benchmark_model output not understood; run it by hand and check its log format")
    return res
