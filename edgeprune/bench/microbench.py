"""Micro-benchmarks that turn a device's spec-sheet peaks into measured ones (no torch needed).

Two ONNX graphs built with onnx.helper:

- ``matmul``: a chain of 8 MatMuls [256,256] x [256,256] (268 MFLOP, 2 MiB of weights): compute-bound, gives
  the fp32 GFLOP/s the runtime actually reaches on large GEMMs at the given thread count.
- ``stream``: 4 element-wise ops (Add/Mul with a scalar) over 16 Mi floats (64 MiB per tensor, 512 MiB moved):
  memory-bound, gives the streaming bandwidth in GB/s.

``measured_profile`` writes those two numbers into a copy of a target profile with ``basis = "measured"``.
The cost model then uses its factors fitted against the HOST's measured peaks (same micro-benchmarks), so
"practical peak" is compared with "practical peak" on both sides.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path

MATMUL_M, MATMUL_K, MATMUL_LAYERS = 256, 256, 8
STREAM_N, STREAM_OPS = 16 * 2**20, 4


def build_microbench(out_dir) -> dict:
    """Write matmul.onnx and stream.onnx into ``out_dir``; return {name: {"path", "flops", "bytes"}}."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    m, k = MATMUL_M, MATMUL_K
    inits, nodes, prev = [], [], "x"
    for i in range(MATMUL_LAYERS):
        w = (rng.standard_normal((k, k)) / np.sqrt(k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = "y" if i == MATMUL_LAYERS - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [out], name=f"matmul{i}"))
        prev = out
    g = helper.make_graph(nodes, "matmul", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, k])], inits)
    mm = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeprune-microbench")
    mm.ir_version = 8
    onnx.checker.check_model(mm)
    p_mm = out_dir / "matmul.onnx"
    onnx.save(mm, str(p_mm))

    n = STREAM_N
    inits = [numpy_helper.from_array(np.array(1.0001, np.float32), "a"),
             numpy_helper.from_array(np.array(0.9999, np.float32), "b")]
    nodes, prev = [], "x"
    for i in range(STREAM_OPS):
        out = "y" if i == STREAM_OPS - 1 else f"s{i}"
        nodes.append(helper.make_node("Add" if i % 2 == 0 else "Mul", [prev, "a" if i % 2 == 0 else "b"], [out],
                                      name=f"stream{i}"))
        prev = out
    g = helper.make_graph(nodes, "stream", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])], inits)
    sm = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeprune-microbench")
    sm.ir_version = 8
    onnx.checker.check_model(sm)
    p_st = out_dir / "stream.onnx"
    onnx.save(sm, str(p_st))
    return {
        "matmul": {"path": str(p_mm), "flops": 2.0 * m * k * k * MATMUL_LAYERS,
                   "bytes": 4.0 * (k * k * MATMUL_LAYERS + 2 * m * k * MATMUL_LAYERS)},
        "stream": {"path": str(p_st), "flops": float(n * STREAM_OPS), "bytes": 4.0 * 2 * n * STREAM_OPS},
    }


def derive(bench: dict, results: dict) -> dict:
    """GFLOP/s and GB/s from the p50 latencies in ``results`` ({name: measurement dict})."""
    mm_s = results["matmul"]["p50_ms"] / 1e3
    st_s = results["stream"]["p50_ms"] / 1e3
    return {
        "peak_fp32_gflops": bench["matmul"]["flops"] / mm_s / 1e9,
        "mem_bandwidth_gbs": bench["stream"]["bytes"] / st_s / 1e9,
        "matmul_p50_ms": results["matmul"]["p50_ms"],
        "stream_p50_ms": results["stream"]["p50_ms"],
    }


def measured_profile(base, derived: dict, *, where: str, threads: int, runtime: str, machine: dict | None = None,
                     name: str | None = None):
    """A copy of Target ``base`` with measured ``peak_fp32_gflops`` and ``mem_bandwidth_gbs``."""
    from ..targets import Fact

    day = _dt.date.today().isoformat()
    src = f"edgeprune calibrate on {where}, {day}, {runtime}, {threads} thread(s)"
    dev = dict(base.device)
    dev["peak_fp32_gflops"] = Fact(round(derived["peak_fp32_gflops"], 2), "GFLOP/s",
                                   f"{src}: {MATMUL_LAYERS}x MatMul {MATMUL_M}x{MATMUL_K}x{MATMUL_K}, p50 "
                                   f"{derived['matmul_p50_ms']:.3f} ms", "measured",
                                   f"achieved, not theoretical (spec-sheet figure: {base.fact('peak_fp32_gflops')})")
    dev["mem_bandwidth_gbs"] = Fact(round(derived["mem_bandwidth_gbs"], 2), "GB/s",
                                    f"{src}: {STREAM_OPS} element-wise ops over {STREAM_N} floats, p50 "
                                    f"{derived['stream_p50_ms']:.3f} ms", "measured",
                                    f"achieved streaming bandwidth (spec-sheet figure: {base.fact('mem_bandwidth_gbs')})")
    if machine and machine.get("cores"):
        dev["cores"] = Fact(int(machine["cores"]), "count", f"os.cpu_count() on {where}, {day}", "measured")
    if machine and (machine.get("board") or machine.get("cpu")):
        desc = " / ".join(x for x in (machine.get("board"), machine.get("cpu")) if x)
        dev["cpu"] = Fact(f"{desc} (spec: {base.fact('cpu')})", None, f"/proc on {where}, {day}", "measured")
    rt = dict(base.runtime)
    rt["threads"] = threads
    return dataclasses.replace(base, name=name or f"{base.name}-measured", title=f"{base.title} (measured)",
                               device=dev, runtime=rt, threads=threads, source_path="<measured>",
                               notes=f"Measured by calibrate_remote on {where} ({day}) from profile {base.name}.")


def _toml_value(v) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def target_to_toml(t) -> str:
    """Serialise a Target in the profile schema (round-trips through load_target)."""
    L = [f"# Generated by edgeprune on {_dt.date.today().isoformat()}.", ""]
    L += [f"name = {_toml_value(t.name)}", f"title = {_toml_value(t.title)}", f"platform = {_toml_value(t.platform)}"]
    if t.notes:
        L.append(f"notes = {_toml_value(t.notes)}")
    L += ["", "[runtime]"]
    for k in ("preferred", "artifacts", "threads", "width_multiple", "onnx_opset", "notes"):
        if k in t.runtime:
            L.append(f"{k} = {_toml_value(t.runtime[k])}")
    L += ["", "[device]"]
    for k, f in t.device.items():
        parts = [f"value = {_toml_value(f.value)}"]
        if f.unit is not None:
            parts.append(f"unit = {_toml_value(f.unit)}")
        parts += [f"source = {_toml_value(f.source)}", f"basis = {_toml_value(f.basis)}"]
        if f.note:
            parts.append(f"note = {_toml_value(f.note)}")
        L.append(f"{k} = {{ " + ", ".join(parts) + " }")
    L += ["", "[budget]"]
    for k, v in t.budget.to_dict().items():
        if v is not None:
            L.append(f"{k} = {_toml_value(v)}")
    return "\n".join(L) + "\n"
