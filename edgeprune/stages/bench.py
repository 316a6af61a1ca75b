"""Stage 6: latency and memory of every artifact: measured on this host, predicted for the target by the
calibrated cost model (with the artifact's own runtime and precision), and measured on the real device when
``--remote`` (ssh) or ``--adb`` (Android, .tflite only) is set."""

from __future__ import annotations

import hashlib
import json

from ..runfolder import read_json, write_json

name = "bench"
BENCH_DIR = "bench"
summary_file = None  # one file per target: bench/<target>.json


def target_file(b) -> str:
    return f"{BENCH_DIR}/{b.target.name}.json"


def target_fingerprint(t) -> str:
    """Hash of a resolved target profile's content (not where its file lies): editing any fact, budget or
    runtime setting changes it."""
    d = dict(t.to_dict(), source_path=None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def calibration_fingerprint() -> str:
    """Hash of the calibration the cost model uses here (a new host calibration re-predicts)."""
    from ..bench.costmodel import load_calibration

    cal = load_calibration()
    return hashlib.sha256(json.dumps(cal.get("factors", {}), sort_keys=True).encode()).hexdigest()[:16]


def depends(b):
    c = b.cfg["bench"]
    if c["remote"] and c.get("adb"):
        from ..errors import ConfigError

        raise ConfigError("bench.remote and bench.adb are both set: measure one device per run (drop --remote or --adb)")
    return [target_fingerprint(b.target), c["runs"], c["warmup"], c["repeats"], c["threads"], c["remote"],
            c.get("port"), c.get("python"), c.get("adb"), c.get("benchmark_binary"), calibration_fingerprint()]


def describe(b):
    c = b.cfg["bench"]
    where = f" and on {c['remote']}" if c["remote"] else ""
    where += f" and on adb:{c['adb']}" if c.get("adb") else ""
    return f"host ({c['repeats']} fresh processes x {c['runs']} runs){where}; predicted for {b.target.name}"


def _ok_paths(b, exp: dict) -> dict:
    """{format: absolute path} of the artifacts that exported."""
    return {f: str(b.run / exp["dir"] / a["path"]) for f, a in exp["artifacts"].items() if a.get("ok")}


def predicted(b, paths: dict, fmt: str) -> dict | None:
    """The cost model's prediction for artifact ``fmt`` on the target, with that artifact's runtime/precision."""
    from ..bench.costmodel import graph_for_artifact, predict, runtime_of

    graph = graph_for_artifact(paths, fmt)
    if graph is None:
        return None
    p = predict(graph, b.target, dtype="int8" if fmt.endswith("int8") else "fp32", runtime=runtime_of(fmt))
    p["graph"] = "onnx-int8" if graph == paths.get("onnx-int8") else "onnx"
    return p


def on_device(b, path: str, fmt: str) -> dict | None:
    """Measured on the device over ssh (any artifact) or adb (.tflite only); None when neither is set."""
    c = b.cfg["bench"]
    if c["remote"]:
        from ..bench.remote import measure_remote

        b.ui.log(f"  measuring {fmt} on {c['remote']}")
        return measure_remote(path, c["remote"], port=c.get("port"), identity=c.get("identity") or None,
                              python=c.get("python") or "python3", ssh_options=tuple(c.get("ssh_options") or ()),
                              threads=b.target.threads, runs=c["runs"], warmup=c["warmup"], repeats=c["repeats"])
    if c.get("adb") and fmt.startswith("tflite"):
        from ..bench.remote import measure_adb

        b.ui.log(f"  measuring {fmt} on adb:{c['adb']} (benchmark_model)")
        kw = {"benchmark_binary": c["benchmark_binary"]} if c.get("benchmark_binary") else {}
        return measure_adb(path, serial=None if c["adb"] == "any" else c["adb"], threads=b.target.threads, runs=c["runs"],
                           warmup=c["warmup"], **kw)
    return None


def run(b) -> list[str]:
    from ..bench.host import measure_host

    exp = read_json(b.run / "export.json")
    paths = _ok_paths(b, exp)
    c = b.cfg["bench"]
    out = {"target": b.target.name, "target_fingerprint": target_fingerprint(b.target), "artifacts": {}}
    for fmt, path in paths.items():
        b.ui.log(f"  measuring {fmt} on this host")
        entry = {"host": measure_host(path, threads=c["threads"], runs=c["runs"], warmup=c["warmup"],
                                      repeats=c["repeats"])}
        pred = predicted(b, paths, fmt)
        if pred:
            entry["predicted"] = pred
        dev = on_device(b, path, fmt)
        if dev:
            entry["device"] = dev
        out["artifacts"][fmt] = entry
    write_json(b.run / target_file(b), out)
    b.outcome[name] = out
    return [target_file(b)]
