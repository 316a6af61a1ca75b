"""Measure on a real device: over ssh (Raspberry Pi, Jetson, any Linux board) or adb (Android).

ssh: plain OpenSSH ``ssh``/``scp`` binaries via subprocess, ``BatchMode=yes`` (never prompts), host keys
accepted on first use (``StrictHostKeyChecking=accept-new``) into the user's or a given known_hosts file.
The host is ``user@host`` or ``user@host:port`` (``user@[::1]:port`` for IPv6); ``-p`` and ``-i`` are passed
only when a port / identity is given, so ``~/.ssh/config`` (Port, IdentityFile, ProxyJump ...) applies.
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


def split_host(host: str, port: Optional[int] = None) -> tuple[str, Optional[int]]:
    """("user@host", port) from "user@host[:port]" / "user@[v6addr][:port]"; an explicit ``port`` wins."""
    if not host or host.startswith("-") or any(c.isspace() for c in host):
        raise InputError(f"bad ssh host {host!r}; use user@host or user@host:port")
    h, p = host, None
    if h.count(":") == 1 or "]:" in h:
        h, _, tail = h.rpartition(":")
        if not tail.isdigit() or not 0 < int(tail) < 65536:
            raise InputError(f"bad ssh port in {host!r}; use user@host:PORT with PORT in 1-65535")
        p = int(tail)
    h = h.replace("[", "").replace("]", "") if "[" in h else h
    if port is not None:
        if not 0 < int(port) < 65536:
            raise InputError(f"bad ssh port {port}; use 1-65535")
        p = int(port)
    return h, p


def _ssh_base(identity, known_hosts, ssh_options: Sequence[str], connect_timeout: int, ssh_config=None) -> list:
    opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}", "-o", "StrictHostKeyChecking=accept-new",
            "-o", "LogLevel=ERROR"]
    if known_hosts is not None:
        opts += ["-o", f"UserKnownHostsFile={known_hosts}"]
    if identity is not None:
        if not Path(identity).is_file():
            raise InputError(f"ssh identity file {identity} not found; pass the private key of the device login")
        opts += ["-i", str(identity), "-o", "IdentitiesOnly=yes"]
    from ..sshopts import check_ssh_options

    for o in check_ssh_options(ssh_options):  # allow-listed: no ProxyCommand/LocalCommand/Include, no raw flags
        opts += ["-o", o]
    if ssh_config is not None:  # Python API only: an ssh config file the caller chose (never from a run folder)
        opts += ["-F", str(ssh_config)]
    return opts


class _Session:
    def __init__(self, host, port, identity, known_hosts, ssh_options, connect_timeout, timeout, ssh_config=None):
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise InputError(f"`{tool}` not found on PATH; install the OpenSSH client (apt install openssh-client)")
        self.host, self.port = split_host(host, port)
        self.timeout = timeout
        self.opts = _ssh_base(identity, known_hosts, ssh_options, connect_timeout, ssh_config)

    def _explain(self, rc: int, stderr: str, what: str) -> RemoteError:
        err = " ".join(stderr.strip().split())[-300:] or "no output"
        low = err.lower()
        where = self.host + (f" port {self.port}" if self.port else "")
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
        cmd = ["ssh", *self.opts, *(["-p", str(self.port)] if self.port else []), self.host, command]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{what} on {self.host} took longer than {self.timeout:.0f} s; raise timeout= or "
                              "use fewer runs") from None
        if check and p.returncode != 0:
            raise self._explain(p.returncode, p.stderr, what)
        return p

    def put(self, files: Sequence, remote_dir: str):
        target = f"{self.host}:{remote_dir}/"
        if ":" in self.host:  # an IPv6 address: scp wants it in brackets
            user, _, addr = self.host.rpartition("@")
            target = f"{user + '@' if user else ''}[{addr}]:{remote_dir}/"
        cmd = ["scp", "-q", *self.opts, *(["-P", str(self.port)] if self.port else []), *[str(f) for f in files],
               target]
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


def measure_remote(path, host: str, *, port: Optional[int] = None, identity=None, python: str = "python3", threads: int = 1,
                   runs: int = 50, warmup: int = 10, repeats: int = 3, ssh_options: Sequence[str] = (),
                   known_hosts=None, connect_timeout: int = 10, timeout: float = 600, ssh_config=None) -> dict:
    """Benchmark ``path`` (.onnx/.tflite) on ``host`` ("user@host" or "user@host:port") over ssh.

    ``ssh_options``: ``Key=Value`` options from a short allow-list (:mod:`edgeprune.sshopts`); ``ssh_config``:
    an ssh config file to use instead of ~/.ssh/config (``ssh -F``; Python callers only).

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
    sess = _Session(host, port, identity, known_hosts, ssh_options, connect_timeout, timeout, ssh_config)
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
    """Measure the micro-benchmarks of :mod:`edgeprune.bench.microbench` on ``host`` and write a measured profile.

    ``target``: the spec profile (name, path or Target) the device is an instance of. The device needs python3
    + numpy + onnxruntime. Measured: sustained fp32 GFLOP/s (profile threads and one thread), sustained int8
    GOP/s, streaming GB/s and the per-op overhead (us). The profile is written as ``<name>-measured.toml`` next
    to ``target`` when that is a user's file, else in the current directory (or at ``out_path``); the
    measured facts carry ``basis = "measured"`` and it loads by name from that directory
    (``--target <name>-measured``). Returns {"profile": path, "derived": ..., "raw": ...}.
    ``ssh`` keywords go to :func:`measure_remote` (port, identity, python, known_hosts, ssh_options, ...).
    """
    from ..targets import Target, load_target
    from . import microbench

    base = target if isinstance(target, Target) else load_target(target)
    th = threads or base.threads
    results = {}
    with tempfile.TemporaryDirectory(prefix="edgeprune-microbench-") as td:
        bench = microbench.build_microbench(td)
        for name, threads_of in microbench.RUNS:
            n = th if threads_of == "profile" else int(threads_of)
            results[microbench.run_key(name, threads_of)] = measure_remote(
                bench[name]["path"], host, threads=n, runs=runs, warmup=warmup, repeats=repeats, **ssh)
    derived = microbench.derive(bench, results)
    r0 = results["matmul@profile"]
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


def adb_commands(path: Path, *, serial: Optional[str], benchmark_binary: str, threads: int, runs: int, warmup: int,
                 adb: str = "adb") -> list:
    """The adb command lines of :func:`measure_adb`: push the model, run benchmark_model, remove the model."""
    a = [adb] + (["-s", serial] if serial else [])
    remote_model = f"/data/local/tmp/edgeprune-{Path(path).name}"
    return [
        a + ["push", str(path), remote_model],
        a + ["shell", benchmark_binary, f"--graph={remote_model}", f"--num_threads={int(threads)}",
             f"--num_runs={int(runs)}", f"--warmup_runs={int(warmup)}", "--use_xnnpack=true",
             "--report_peak_memory_footprint=true"],
        a + ["shell", "rm", "-f", remote_model],
    ]


def measure_adb(path, *, serial: Optional[str] = None, benchmark_binary: str = "/data/local/tmp/benchmark_model",
                threads: int = 4, runs: int = 50, warmup: int = 10, adb: str = "adb", dry_run: bool = False,
                timeout: float = 600) -> dict:
    """Measure a .tflite on an Android phone with LiteRT's ``benchmark_model`` over adb.

    UNTESTED ON A REAL DEVICE: no phone was available when this was written. The command lines follow the
    LiteRT benchmark tool's documented flags; the output parser is tested on logs copied from real runs of
    several benchmark_model versions (:func:`parse_benchmark_model`). Needs ``adb`` on PATH, a device in
    ``adb devices`` and the ``benchmark_model`` binary for the phone's ABI at ``benchmark_binary`` (from the
    LiteRT releases: ``adb push benchmark_model /data/local/tmp/ && adb shell chmod +x ...``).
    ``dry_run=True`` returns the adb commands without running anything. Raises InputError when adb, the
    device or the model is missing, RemoteError when a command fails.
    """
    path = Path(path)
    if path.suffix.lower() != ".tflite":
        raise InputError(f"{path} is not a .tflite file; benchmark_model runs TFLite models only")
    cmds = adb_commands(path, serial=serial, benchmark_binary=benchmark_binary, threads=threads, runs=runs,
                        warmup=warmup, adb=adb)
    if dry_run:
        return {"commands": cmds}
    if shutil.which(adb) is None:
        raise InputError(f"`{adb}` not found on PATH; install Android platform-tools to measure on a phone")
    if not path.is_file():
        raise InputError(f"model file {path} not found; export the model first")
    a = cmds[0][: cmds[0].index("push")]
    p = subprocess.run(a + ["get-state"], capture_output=True, text=True, timeout=30)
    if p.returncode != 0 or p.stdout.strip() != "device":
        raise InputError("no Android device attached (adb get-state failed); connect one with USB debugging on")
    outs = []
    for c in cmds:
        p = subprocess.run(c, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RemoteError(f"`{' '.join(c[:4])} ...` failed: {(p.stderr or p.stdout).strip()[-200:]}; check "
                              f"that {benchmark_binary} exists on the phone and is executable")
        outs.append(p.stdout + p.stderr)
    res = parse_benchmark_model(outs[1])
    res.update({"source": "measured", "where": f"adb:{serial or 'default'}", "threads": threads, "repeats": 1,
                "model": path.name, "model_size_mb": path.stat().st_size / 2**20, "runtime": "benchmark_model"})
    return res


_NUM = r"([-+\d.eE]+)"


def _last(pattern: str, log: str):
    """The last match of ``pattern`` in ``log`` (benchmark_model prints a warm-up line before the real one)."""
    import re

    ms = list(re.finditer(pattern, log))
    return ms[-1] if ms else None


def parse_benchmark_model(log: str) -> dict:
    """The runner's JSON fields from LiteRT/TFLite ``benchmark_model`` output (times in ms, memory in MB).

    Reads the summary line (Init, First inference, Warmup (avg), Inference (avg)), the LAST ``count=...`` line
    (the timed runs, after the warm-up line): min/max/avg/std and, in newer builds, p5/median/p95, and the
    memory lines (``Peak memory footprint (MB): init= overall=``, or ``Memory footprint delta from the start of
    the tool (MB): init= overall=``, and ``Overall peak memory footprint (MB) via periodic monitoring:``).
    benchmark_model prints no p90: ``p90_ms`` is its p95 (>= p90, so a budget check is conservative), or the
    max without percentiles; ``p50_ms`` is the median, or the average without it (``p50_from``/``p90_from``
    say which)."""
    res: dict = {}
    m = _last(r"Inference timings in us: Init: " + _NUM + r", First inference: " + _NUM +
              r", Warmup \(avg\): " + _NUM + r", Inference \(avg\): " + _NUM, log)
    if m:
        res.update(init_ms=float(m[1]) / 1e3, first_inference_ms=float(m[2]) / 1e3,
                   warmup_avg_ms=float(m[3]) / 1e3, avg_ms=float(m[4]) / 1e3)
    m = _last(r"count=(\d+) first=" + _NUM + r" curr=" + _NUM + r" min=" + _NUM + r" max=" + _NUM +
              r" avg=" + _NUM + r" std=" + _NUM + r"(?: p5=" + _NUM + r" median=" + _NUM + r" p95=" + _NUM + r")?", log)
    if m:
        res.update(runs=int(m[1]), min_ms=float(m[4]) / 1e3, max_ms=float(m[5]) / 1e3, std_ms=float(m[7]) / 1e3)
        res.setdefault("avg_ms", float(m[6]) / 1e3)
        if m[8] is not None:
            res.update(p5_ms=float(m[8]) / 1e3, p50_ms=float(m[9]) / 1e3, p95_ms=float(m[10]) / 1e3)
    if "avg_ms" not in res:
        raise ConfigError("benchmark_model output not understood (no 'Inference timings in us' line); run it by "
                          "hand and check that it finished")
    if "p50_ms" in res:
        res.update(p90_ms=res["p95_ms"], p50_from="median", p90_from="p95 (benchmark_model prints no p90)")
    else:
        res.update(p50_ms=res["avg_ms"], p50_from="avg (this benchmark_model build prints no median)")
        if "max_ms" in res:
            res.update(p90_ms=res["max_ms"], p90_from="max (this benchmark_model build prints no percentiles)")
    m = _last(r"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): init=" + _NUM +
              r" overall=" + _NUM, log)
    if m:
        res.update(init_memory_mb=float(m[1]), model_footprint_mb=float(m[2]),
                   memory_source="benchmark_model footprint delta from the tool's start")
    m = _last(r"Overall peak memory footprint \(MB\) via periodic monitoring: " + _NUM, log)
    if m:
        res["peak_memory_mb"] = float(m[1])
    res.setdefault("model_footprint_mb", None)
    return res
