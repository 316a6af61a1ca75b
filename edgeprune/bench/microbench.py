"""Micro-benchmarks that measure what the cost model needs on a device (numpy + onnxruntime there, no torch).

ONNX graphs built with onnx.helper (and one quantized with onnxruntime.quantization on this machine):

- ``matmul``: a chain of 8 MatMuls [256,256] x [256,256] (268 MFLOP, 2 MiB of weights): compute-bound; run
  at the profile's threads and on one thread it gives ``sustained_fp32_gflops`` / ``sustained_1t_fp32_gflops``
  (large GEMMs: an upper bound of what a conv net reaches).
- ``matmul_int8``: the same chain quantized (QDQ, per-tensor int8): ``sustained_int8_gops``.
- ``stream``: 4 element-wise ops (Add/Mul with a scalar) over 16 Mi floats (512 MiB moved): memory-bound,
  gives the streaming bandwidth ``mem_bandwidth_gbs``.
- ``overhead``: 64 Adds on a [1, 16] tensor, one thread: time per op = ``per_op_overhead_us`` (dispatch cost,
  dominant for small models).

:func:`measured_profile` writes these numbers into a copy of a target profile with ``basis = "measured"``
(the spec peaks stay as they are); :mod:`edgeprune.bench.costmodel` then uses them instead of the published
or borrowed figures.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path

MATMUL_M, MATMUL_K, MATMUL_LAYERS = 256, 256, 8
STREAM_N, STREAM_OPS = 16 * 2**20, 4
OVERHEAD_OPS, OVERHEAD_N = 64, 16
#: (graph, threads: "profile" | 1) measured by calibrate_remote
RUNS = (("matmul", "profile"), ("matmul", 1), ("matmul_int8", "profile"), ("stream", "profile"), ("overhead", 1))


def _save(nodes, name, x_shape, y_shape, inits, path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeprune-microbench")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def _chain(kinds, consts):
    """Element-wise nodes x -> ... -> y, node i applying kinds[i] with constant consts[i]."""
    from onnx import helper

    nodes, prev = [], "x"
    for i, (k, c) in enumerate(zip(kinds, consts)):
        out = "y" if i == len(kinds) - 1 else f"t{i}"
        nodes.append(helper.make_node(k, [prev, c], [out], name=f"{k.lower()}{i}"))
        prev = out
    return nodes


def _quantize(src: Path, dst: Path) -> Path:
    """QDQ int8 copy of the matmul graph (onnxruntime.quantization, MinMax on 4 random inputs)."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.it = iter([{"x": rng.standard_normal((MATMUL_M, MATMUL_K)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8)
    return dst


def build_microbench(out_dir) -> dict:
    """Write the micro-benchmark graphs into ``out_dir``; return {name: {"path", "flops", "bytes", "ops"}}."""
    import numpy as np
    from onnx import helper, numpy_helper

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
    p_mm = _save(nodes, "matmul", [m, k], [m, k], inits, out_dir / "matmul.onnx")
    p_q = _quantize(p_mm, out_dir / "matmul_int8.onnx")

    consts = [numpy_helper.from_array(np.array(1.0001, np.float32), "a"),
              numpy_helper.from_array(np.array(0.9999, np.float32), "b")]
    kinds = ["Add" if i % 2 == 0 else "Mul" for i in range(STREAM_OPS)]
    p_st = _save(_chain(kinds, ["a" if kk == "Add" else "b" for kk in kinds]), "stream", [STREAM_N], [STREAM_N],
                 consts, out_dir / "stream.onnx")
    p_ov = _save(_chain(["Add"] * OVERHEAD_OPS, ["a"] * OVERHEAD_OPS), "overhead", [1, OVERHEAD_N],
                 [1, OVERHEAD_N], consts[:1], out_dir / "overhead.onnx")
    mm_flops = 2.0 * m * k * k * MATMUL_LAYERS
    return {
        "matmul": {"path": str(p_mm), "flops": mm_flops, "bytes": 4.0 * (k * k * MATMUL_LAYERS + 2 * m * k * MATMUL_LAYERS)},
        "matmul_int8": {"path": str(p_q), "flops": mm_flops, "bytes": 1.0 * (k * k * MATMUL_LAYERS + 2 * m * k * MATMUL_LAYERS)},
        "stream": {"path": str(p_st), "flops": float(STREAM_N * STREAM_OPS), "bytes": 4.0 * 2 * STREAM_N * STREAM_OPS},
        "overhead": {"path": str(p_ov), "flops": float(OVERHEAD_N * OVERHEAD_OPS), "ops": OVERHEAD_OPS},
    }


def run_key(name: str, threads) -> str:
    """The result key of one micro-benchmark run: "matmul@profile", "matmul@1" ..."""
    return f"{name}@{threads}"


def derive(bench: dict, results: dict) -> dict:
    """The measured figures from the p50 latencies in ``results`` ({run_key: measurement dict})."""
    def s(key):
        return results[key]["p50_ms"] / 1e3

    out = {
        "sustained_fp32_gflops": bench["matmul"]["flops"] / s("matmul@profile") / 1e9,
        "sustained_1t_fp32_gflops": bench["matmul"]["flops"] / s("matmul@1") / 1e9,
        "sustained_int8_gops": bench["matmul_int8"]["flops"] / s("matmul_int8@profile") / 1e9,
        "mem_bandwidth_gbs": bench["stream"]["bytes"] / s("stream@profile") / 1e9,
        "per_op_overhead_us": results["overhead@1"]["p50_ms"] * 1e3 / bench["overhead"]["ops"],
    }
    out["p50_ms"] = {k: v["p50_ms"] for k, v in results.items()}
    return out


_WHAT = {
    "sustained_fp32_gflops": ("GFLOP/s", "matmul@profile", f"{MATMUL_LAYERS}x MatMul {MATMUL_M}x{MATMUL_K}x{MATMUL_K} fp32, profile threads"),
    "sustained_1t_fp32_gflops": ("GFLOP/s", "matmul@1", f"{MATMUL_LAYERS}x MatMul {MATMUL_M}x{MATMUL_K}x{MATMUL_K} fp32, 1 thread"),
    "sustained_int8_gops": ("GOP/s", "matmul_int8@profile", "the MatMul chain quantized (QDQ int8), profile threads"),
    "mem_bandwidth_gbs": ("GB/s", "stream@profile", f"{STREAM_OPS} element-wise ops over {STREAM_N} floats"),
    "per_op_overhead_us": ("us", "overhead@1", f"{OVERHEAD_OPS} Adds on [1, {OVERHEAD_N}], 1 thread, time / {OVERHEAD_OPS}"),
}


def measured_profile(base, derived: dict, *, where: str, threads: int, runtime: str, machine: dict | None = None,
                     name: str | None = None):
    """A copy of Target ``base`` with the measured figures of :func:`derive` (basis "measured")."""
    from ..targets import Fact

    day = _dt.date.today().isoformat()
    src = f"edgeprune calibrate on {where}, {day}, {runtime}, {threads} thread(s)"
    dev = dict(base.device)
    for key, (unit, run, what) in _WHAT.items():
        v = float(derived[key])
        old = base.device.get(key)
        note = "achieved on large GEMMs: an upper bound of conv-net throughput" if key.startswith("sustained") else None
        if old is not None:
            note = "; ".join(x for x in (note, f"profile figure before: {old.value} ({old.basis})") if x)
        dev[key] = Fact(round(v, 3 if key == "per_op_overhead_us" else 2), unit,
                        f"{src}: {what}, p50 {derived['p50_ms'][run]:.3f} ms", "measured", note)
    if machine and machine.get("cores"):
        dev["cores"] = Fact(int(machine["cores"]), "count", f"os.cpu_count() on {where}, {day}", "measured")
    if machine and (machine.get("board") or machine.get("cpu")):
        desc = " / ".join(x for x in (machine.get("board"), machine.get("cpu")) if x)
        dev["cpu"] = Fact(f"{desc} (spec: {base.fact('cpu')})", None, f"/proc on {where}, {day}", "measured")
    rt = dict(base.runtime)
    rt["threads"] = threads
    return dataclasses.replace(base, name=name or f"{base.name}-measured", title=f"{base.title} (measured)",
                               device=dev, runtime=rt, threads=threads, source_path="<measured>",
                               notes=f"Measured by edgeprune calibrate on {where} ({day}) from profile {base.name}.")


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
