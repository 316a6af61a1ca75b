"""Stage 6: latency and memory of every artifact: measured on this host, predicted for the
target by the calibrated cost model, and measured on the real device when ``--remote`` is set."""

from __future__ import annotations

from ..runfolder import read_json, write_json

name = "bench"
BENCH_DIR = "bench"
summary_file = None  # one file per target: bench/<target>.json


def target_file(b) -> str:
    return f"{BENCH_DIR}/{b.target.name}.json"


def depends(b):
    c = b.cfg["bench"]
    return [b.target.name, c["runs"], c["warmup"], c["repeats"], c["threads"], c["remote"]]


def describe(b):
    where = f" and on {b.cfg['bench']['remote']}" if b.cfg["bench"]["remote"] else ""
    return f"host ({b.cfg['bench']['repeats']} fresh processes x {b.cfg['bench']['runs']} runs){where}; predicted for {b.target.name}"


def _onnx_for(artifacts: dict, fmt: str) -> str | None:
    """The ONNX graph the cost model reads for an artifact (TFLite reuses the same model's ONNX)."""
    int8 = fmt.endswith("int8")
    for cand in (("onnx-int8", "onnx") if int8 else ("onnx",)):
        if artifacts.get(cand, {}).get("ok"):
            return cand
    return None


def run(b) -> list[str]:
    from ..bench.costmodel import predict
    from ..bench.host import measure_host

    exp = read_json(b.run / "export.json")
    artifacts = exp["artifacts"]
    c = b.cfg["bench"]
    out = {"target": b.target.name, "artifacts": {}}
    for fmt, art in artifacts.items():
        if not art.get("ok"):
            continue
        path = b.run / exp["dir"] / art["path"]
        b.ui.log(f"  measuring {fmt} on this host")
        entry = {"host": measure_host(path, threads=c["threads"], runs=c["runs"], warmup=c["warmup"], repeats=c["repeats"])}
        src = _onnx_for(artifacts, fmt)
        if src:
            entry["predicted"] = predict(b.run / exp["dir"] / artifacts[src]["path"], b.target,
                                         dtype="int8" if fmt.endswith("int8") else "fp32")
            entry["predicted"]["graph"] = src
        if c["remote"]:
            from ..bench.remote import measure_remote

            b.ui.log(f"  measuring {fmt} on {c['remote']}")
            entry["device"] = measure_remote(path, c["remote"], threads=b.target.threads, runs=c["runs"], warmup=c["warmup"])
        out["artifacts"][fmt] = entry
    write_json(b.run / target_file(b), out)
    b.outcome[name] = out
    return [target_file(b)]
