"""The kernel predictor's error measured through the SSH path (bench/remote.py) on a loopback "device".

    python benchmarks/costmodel/loopback.py --workdir DIR [--runs 30]

Starts a throw-away sshd on 127.0.0.1 as the current user (host key, authorized_keys and config in a temp dir,
edgeprune/bench/loopback.py, as the tests use), measures every whole-model artifact of DIR (kernel_suite.py) with
``measure_remote`` (1 fresh runner process per artifact, 1 thread, batch 1, ``--runs`` timed runs) and compares the
p50 with the kernel predictor's prediction from the committed calibration (``costmodel.predict(..., "host")``,
fitted on all rows of the host experiment: this checks the SSH measurement path, not a new device). Writes
loopback.md / loopback.json next to this script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from edgeprune.bench import costmodel, kernels  # noqa: E402
from edgeprune.bench.loopback import loopback_sshd  # noqa: E402
from edgeprune.bench.remote import measure_remote  # noqa: E402

KEYS = {"onnx": "onnxruntime-fp32", "onnx-int8": "onnxruntime-int8", "tflite": "tflite-fp32",
        "tflite-int8": "tflite-int8"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--subset", action="store_true", help="only the 28x28 width-1 built-in models and the torchvision ones")
    a = ap.parse_args(argv)
    wd = Path(a.workdir)
    meas = json.loads((wd / "measured.json").read_text())
    rows = [r for r in meas["rows"] if r["group"] != "micro"
            and (not a.subset or r["group"] == "zoo" or r["name"].endswith("28x28-w1"))]
    load0 = os.getloadavg()
    out = []
    with tempfile.TemporaryDirectory(prefix="edgeprune-loopback-") as td:
        with loopback_sshd(Path(td)) as server:
            host, ssh = server["host"], server["ssh"]
            for r in rows:
                for fmt, fn in r["artifacts"].items():
                    path = wd / r["name"] / fn
                    rt = "tflite" if fmt.startswith("tflite") else "onnxruntime"
                    dtype = "int8" if fmt.endswith("int8") else "fp32"
                    # TFLite: predict() reads the .tflite exported next to the ONNX graph it is given
                    graph = path if rt == "onnxruntime" else wd / r["name"] / r["artifacts"]["onnx"]
                    pred = costmodel.predict(graph, "host", runtime=rt, dtype=dtype, threads=1)
                    m = measure_remote(path, host, threads=1, runs=a.runs, warmup=5, repeats=1, **ssh)
                    out.append({"name": r["name"], "family": r["family"], "fmt": fmt, "key": KEYS[fmt],
                                "measured_us": m["p50_ms"] * 1e3, "predicted_us": pred["latency_ms"] * 1e3,
                                "model": pred["model"], "host_us": r["measured"].get(fmt, {}).get("p50_us")})
                print(f"{r['name']}: " + ", ".join(f"{x['fmt']} {x['measured_us']:.0f}/{x['predicted_us']:.0f}"
                                                   for x in out if x["name"] == r["name"]), flush=True)
    load1 = os.getloadavg()
    summ = {}
    for key in KEYS.values():
        xs = [x for x in out if x["key"] == key and x["model"].startswith("kernel-")]
        if xs:
            summ[key] = kernels.errors_pct([x["predicted_us"] for x in xs], [x["measured_us"] for x in xs])
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    cmd = f"python benchmarks/costmodel/loopback.py --workdir DIR --runs {a.runs}" + (" --subset" if a.subset else "")
    lines = ["# Kernel predictor through the SSH path: loopback \"device\" (this host over ssh 127.0.0.1)", "",
             f"- Date {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, git {rev}; command `{cmd}`; load average "
             f"before / after {[round(x, 2) for x in load0]} / {[round(x, 2) for x in load1]} (shared machine).",
             f"- MEASURED with `measure_remote` (one fresh runner process per artifact on the \"device\", {a.runs} runs, "
             "1 thread, batch 1); PREDICTED by the committed kernel calibration (fitted on all rows of the host "
             "experiment, so this table checks the SSH measurement path, not held-out accuracy on a new device).", "",
             "| runtime | models | median abs err | within ±10% | p90 abs err |", "|---|---:|---:|---:|---:|"]
    for key, s in summ.items():
        lines.append(f"| {key} | {s['n']} | {s['median_abs_pct']:.1f}% | {s['within_10_pct']:.0f}% | {s['p90_abs_pct']:.1f}% |")
    lines += ["", "| model | artifact | measured over ssh (us) | measured in-process on the host (us) | predicted (us) | error |",
              "|---|---|---:|---:|---:|---:|"]
    for x in out:
        lines.append(f"| {x['name']} | {x['fmt']} | {x['measured_us']:.1f} | {x['host_us'] or 0:.1f} | "
                     f"{x['predicted_us']:.1f} | {(x['predicted_us'] / x['measured_us'] - 1) * 100:+.0f}% |")
    (HERE / "loopback.md").write_text("\n".join(lines) + "\n")
    (HERE / "loopback.json").write_text(json.dumps({"command": cmd, "git": rev, "loadavg_before": load0,
                                                    "loadavg_after": load1, "summary": summ, "rows": out}, indent=1))
    print(json.dumps(summ, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
