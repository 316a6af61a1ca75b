"""Roofline cost model: predict a model's latency and peak memory on a target from its ONNX graph.

Model ("roofline-v1"), per operator after the fusions every CPU runtime does (activation into Conv/Gemm,
constant Add/Mul/BatchNorm into Conv, QuantizeLinear/DequantizeLinear into the int8 op, views are free,
constant sub-graphs are folded)::

    t_op    = max(work / (peak_compute * eff_compute), bytes / (mem_bandwidth * eff_mem)) + per_op_overhead
    latency = sum(t_op) + per_run_overhead

``work`` is the op's FLOPs with its output channels rounded up to the profile's ``width_multiple`` (SIMD
kernels compute whole vectors: 13 channels cost as 16 on the host's AVX-512). ``peak_compute`` is the profile's
``peak_fp32_gflops`` or ``peak_int8_gops`` (by ``dtype``) for the cores used at the profile's thread count,
``mem_bandwidth`` its ``mem_bandwidth_gbs``; ``bytes`` = weights + activation inputs + outputs of the op (1 byte
per element for int8, bias 4).

Calibration: the efficiency factors and overheads are fitted by least squares (relative error) against
fresh-process measurements on THE HOST (profile ``host``) and stored per runtime+dtype in ``calibration.json``
(benchmarks/costmodel/host_error.py; results.md there gives the held-out error). For a target the same
efficiencies are used with the target's peaks, and the overheads are scaled by host clock / target clock (they
are instruction-bound). That transfer is an ASSUMPTION, not a measurement: results are labelled
``"source": "predicted"``. On the host, onnxruntime/XNNPACK reach ~90-100% of the derived AVX-512 peak on these
models; ARM kernels usually reach less, so target predictions lean optimistic. Profiles made by
``calibrate_remote`` carry measured (achieved) peaks; for them the factors fitted against the host's measured
peaks (key suffix ``@measured``) are used, so achieved is compared with achieved on both sides.

Memory: ``peak_memory_mb`` = weight bytes + the maximum over the topological order of the activation bytes alive
at a step (a tensor lives from its producer to its last consumer; views share their input's buffer): a lower
bound. ``model_footprint_mb`` = base + k_w * weights + k_a * activations, fitted on the host against the runner's
``model_footprint_mb`` (peak RSS minus the runtime's import footprint: adds the session/arena baseline and packed
weight copies); it is the figure comparable with a measurement and with a profile's ``peak_memory_mb`` budget.

All memory sizes are MiB (2**20 bytes), like the runner's VmHWM figures.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from ..errors import ConfigError, InputError

CALIBRATION_PATH = Path(__file__).with_name("calibration.json")
MODEL_NAME = "roofline-v1"
MIB = float(2**20)

CONV_OPS = {"Conv", "ConvTranspose", "QLinearConv", "ConvInteger"}
MATMUL_OPS = {"Gemm", "MatMul", "QLinearMatMul", "MatMulInteger", "FusedMatMul"}
COMPUTE_OPS = CONV_OPS | MATMUL_OPS
VIEW_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
FUSABLE_ACT = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh", "HardSwish", "Elu", "Selu"}
FUSABLE_AFFINE = {"Add", "Mul", "Sub", "Div", "BatchNormalization"}  # with constant operands, after a conv/gemm
TRANSCENDENTAL = {"Sigmoid", "Tanh", "Exp", "Log", "Erf", "Gelu", "Softplus", "HardSwish", "Elu", "Selu", "Pow",
                  "Sqrt", "Reciprocal", "Div"}
REDUCE_OPS = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin",
              "ReduceProd", "ReduceL2", "ArgMax", "ArgMin"}
MOVE_OPS = {"Concat", "Transpose", "Pad", "Slice", "Gather", "Split", "Expand", "Tile", "Resize", "Upsample",
            "DepthToSpace", "SpaceToDepth", "Cast", "Where"}

_ELEM_SIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}
_INT8_TYPES = {2, 3}  # UINT8, INT8
_FLOAT_TYPES = {1, 10, 11, 16}


@dataclass
class OpCost:
    name: str
    op_type: str
    macs: float = 0.0
    flops: float = 0.0
    weight_bytes: float = 0.0
    act_bytes: float = 0.0
    fused: list = field(default_factory=list)
    int8: bool = False
    flops_eff: float = -1.0  # flops with output channels padded to the SIMD width (= flops when not padded)

    @property
    def work(self) -> float:
        return self.flops if self.flops_eff < 0 else self.flops_eff

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.act_bytes


@dataclass
class GraphCost:
    ops: list  # OpCost, only ops that run (not free, not fused)
    macs: float
    flops: float
    weight_bytes: float
    activation_peak_bytes: float
    dtype: str
    n_nodes: int

    def to_dict(self) -> dict:
        return {"macs": self.macs, "flops": self.flops, "weight_bytes": self.weight_bytes,
                "activation_peak_bytes": self.activation_peak_bytes, "n_ops": len(self.ops),
                "n_nodes": self.n_nodes, "dtype": self.dtype}


# --------------------------------------------------------------------------------------- graph analysis


def _load(onnx_model):
    import onnx

    if isinstance(onnx_model, (str, Path)):
        p = Path(onnx_model)
        if not p.is_file():
            raise InputError(f"ONNX file {p} not found; export the model first")
        try:
            model = onnx.load(str(p))
        except Exception as e:  # noqa: BLE001
            raise InputError(f"cannot read ONNX file {p} ({str(e).splitlines()[0]}); re-export it") from None
    else:
        model = onnx_model
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - fall back to the shapes already in the graph
        pass
    return model


def _shape_of(vi) -> tuple[Optional[list], int]:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None, t.elem_type
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in t.shape.dim]
    return dims, t.elem_type


def _prod(xs) -> float:
    r = 1.0
    for x in xs:
        r *= float(x)
    return r


def _pad(n: float, to: int) -> float:
    return float(math.ceil(n / to) * to) if to > 1 and n > 0 else float(n)


def analyze(onnx_model, dtype: str = "fp32", pad_to: int = 1) -> GraphCost:
    """Per-operator MACs/FLOPs/bytes and the activation liveness peak of an ONNX graph (batch = 1).

    ``pad_to``: SIMD width in channels (a profile's ``width_multiple``): the output channels of Conv/Gemm/MatMul
    are rounded up to it for the time estimate (``OpCost.work``), since kernels compute whole vectors; the
    reported MACs/FLOPs stay exact."""
    if dtype not in ("fp32", "int8"):
        raise ConfigError(f"dtype {dtype!r} is not supported; use 'fp32' or 'int8'")
    from onnx import numpy_helper

    model = _load(onnx_model)
    g = model.graph
    shapes: dict[str, Optional[list]] = {}
    etypes: dict[str, int] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        shapes[vi.name], etypes[vi.name] = _shape_of(vi)
    const: set[str] = set()
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
        etypes[init.name] = init.data_type
        const.add(init.name)
    graph_inputs = [i.name for i in g.input if i.name not in const]
    graph_outputs = [o.name for o in g.output]

    def esize(name: str, weight: bool = False) -> float:
        et = etypes.get(name, 1)
        if et in _INT8_TYPES:
            return 1.0
        if dtype == "int8" and et in _FLOAT_TYPES:
            if weight and len(shapes.get(name) or []) <= 1:
                return 4.0  # bias / scales stay 32-bit
            return 1.0
        return float(_ELEM_SIZE.get(et, 4))

    def nelem(name: str) -> float:
        s = shapes.get(name)
        return _prod(s) if s is not None else 0.0

    def nbytes(name: str, weight: bool = False) -> float:
        return nelem(name) * esize(name, weight)

    nodes = list(g.node)
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for x in n.input:
            if x:
                consumers.setdefault(x, []).append(i)

    alias: dict[str, str] = {}  # tensor -> tensor whose buffer it shares

    def root(t: str) -> str:
        while t in alias:
            t = alias[t]
        return t

    op_of_output: dict[str, OpCost] = {}
    ops: list[OpCost] = []
    weight_names: set[str] = set()
    step_of_op: dict[int, int] = {}  # node index -> index in the execution order (for liveness)

    for i, n in enumerate(nodes):
        ins = [x for x in n.input if x]
        t = n.op_type
        if t == "Constant" or (ins and all(x in const for x in ins)) or t in ("Shape", "Size"):
            # folded at load time (constant sub-graph) or shape-only
            for o in n.output:
                const.add(o)
                if t == "DequantizeLinear":  # a quantized weight: stored as int8
                    etypes[o] = etypes.get(ins[0], 1)
                    shapes.setdefault(o, shapes.get(ins[0]))
                if t == "Constant":
                    for a in n.attribute:
                        if a.name == "value":
                            arr = numpy_helper.to_array(a.t)
                            shapes[o], etypes[o] = list(arr.shape), a.t.data_type
            continue
        dyn = [x for x in ins if x not in const]
        cst = [x for x in ins if x in const]
        if t in QDQ_OPS or t in VIEW_OPS:
            if dyn:
                alias[n.output[0]] = dyn[0]
                if t in QDQ_OPS and dyn[0] in op_of_output and t == "QuantizeLinear":
                    op_of_output[dyn[0]].int8 = True
                if dyn[0] in op_of_output:
                    op_of_output[n.output[0]] = op_of_output[dyn[0]]
            else:
                const.add(n.output[0])
            continue
        out = n.output[0]
        out_el = nelem(out)
        # fusion into the producing conv/gemm
        if len(dyn) == 1 and dyn[0] in op_of_output:
            prod_op = op_of_output[dyn[0]]
            single = len(consumers.get(dyn[0], [])) == 1 and dyn[0] not in graph_outputs
            is_act = t in FUSABLE_ACT
            is_affine = t in FUSABLE_AFFINE and len(cst) >= 1
            fuses = (is_act and prod_op.op_type in COMPUTE_OPS | {"Add", "Sub", "Mul"}) or (
                is_affine and prod_op.op_type in COMPUTE_OPS)
            if single and fuses and len(prod_op.fused) < 3:
                prod_op.flops += out_el
                if prod_op.flops_eff >= 0:
                    prod_op.flops_eff += out_el
                prod_op.fused.append(t)
                alias[out] = dyn[0]
                op_of_output[out] = prod_op
                continue
        oc = OpCost(name=n.name or f"{t}_{i}", op_type=t)
        attrs = {a.name: a for a in n.attribute}
        if t in CONV_OPS:
            x, w = ins[0], ins[1] if t != "QLinearConv" else ins[3]
            ws = shapes.get(w) or []
            if t == "ConvTranspose":
                cout_g = (ws[1] if len(ws) > 1 else 1)
                oc.macs = nelem(x) * cout_g * _prod(ws[2:])
            else:
                cin_g = ws[1] if len(ws) > 1 else 1
                oc.macs = out_el * cin_g * _prod(ws[2:])
            oc.flops = 2 * oc.macs + out_el * (len(ins) > 2)
            cout = float(ws[0]) if ws else 0.0
            if t == "ConvTranspose" and len(ws) > 1:
                group = attrs["group"].i if "group" in attrs else 1
                cout = float(ws[1] * group)
            if cout > 0:
                oc.flops_eff = oc.flops * _pad(cout, pad_to) / cout
        elif t in MATMUL_OPS:
            a = ins[0]
            sa = shapes.get(a) or [1]
            if t == "Gemm":
                ta = attrs["transA"].i if "transA" in attrs else 0
                k = sa[0] if ta else sa[-1]
            else:
                k = sa[-1]
            oc.macs = out_el * k
            oc.flops = 2 * oc.macs + (out_el if t == "Gemm" and len(ins) > 2 else 0)
            n_out = float((shapes.get(out) or [0])[-1] or 0)
            if n_out > 0:
                oc.flops_eff = oc.flops * _pad(n_out, pad_to) / n_out
        elif t in ("MaxPool", "AveragePool", "LpPool"):
            ks = attrs["kernel_shape"].ints if "kernel_shape" in attrs else [1]
            oc.flops = out_el * _prod(ks)
        elif t in REDUCE_OPS:
            oc.flops = nelem(ins[0])
        elif t in ("Softmax", "LogSoftmax"):
            oc.flops = 5 * out_el
        elif t in ("LayerNormalization", "InstanceNormalization", "GroupNormalization"):
            oc.flops = 8 * out_el
        elif t == "BatchNormalization":
            oc.flops = 2 * out_el
        elif t in MOVE_OPS:
            oc.flops = 0.0
        else:  # element-wise and anything else: a few flops per output element
            oc.flops = out_el * (4 if t in TRANSCENDENTAL else 1)
        oc.int8 = dtype == "int8" or any(etypes.get(root(x)) in _INT8_TYPES for x in dyn)
        for w in cst:
            if etypes.get(w, 1) not in (6, 7):  # int32/int64 constants are shapes/axes/indices, not weights
                oc.weight_bytes += nbytes(w, weight=True)
                weight_names.add(w)
        oc.act_bytes = sum(nbytes(root(x)) for x in dyn) + sum(nbytes(o) for o in n.output if o)
        step_of_op[i] = len(ops)
        ops.append(oc)
        for o in n.output:
            if o:
                op_of_output[o] = oc

    # liveness over the execution order (ops that run); aliases extend their root buffer's life
    last = len(ops)
    start: dict[str, int] = {}
    end: dict[str, int] = {}
    for gi in graph_inputs:
        start[gi] = 0
        end[gi] = 0
    for i, n in enumerate(nodes):
        if i not in step_of_op:
            continue
        s = step_of_op[i]
        for o in n.output:
            if o:
                r = root(o)
                start.setdefault(r, s)
                end[r] = max(end.get(r, s), s)
    for i, n in enumerate(nodes):
        # a consumer's step: for free/fused nodes, use the step of the last op that ran before them
        s = step_of_op.get(i)
        if s is None:
            prior = [v for k, v in step_of_op.items() if k <= i]
            s = max(prior) if prior else 0
        for x in n.input:
            if x and x not in const:
                r = root(x)
                if r in start:
                    end[r] = max(end.get(r, s), s)
    for o in graph_outputs:
        r = root(o)
        if r in start:
            end[r] = last
    peak = 0.0
    for s in range(max(last, 1) + 1):
        live = sum(nbytes(r) for r in start if start[r] <= s <= end[r])
        peak = max(peak, live)

    weight_bytes = sum(nbytes(w, weight=True) for w in weight_names)
    return GraphCost(ops=ops, macs=sum(o.macs for o in ops), flops=sum(o.flops for o in ops),
                     weight_bytes=weight_bytes, activation_peak_bytes=peak, dtype=dtype, n_nodes=len(nodes))


# ----------------------------------------------------------------------------------- prediction


def load_calibration(calibration=None) -> dict:
    """The calibration dict: ``None`` -> the packaged calibration.json, a path -> that file, a dict -> itself."""
    if isinstance(calibration, dict):
        return calibration
    p = Path(calibration) if calibration is not None else CALIBRATION_PATH
    if not p.is_file():
        if calibration is None:
            return {"version": 1, "factors": {}}
        raise InputError(f"calibration file {p} not found; run benchmarks/costmodel/host_error.py or pass None")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: malformed calibration JSON ({e}); regenerate it with calibrate()") from None
    if not isinstance(data.get("factors"), dict):
        raise ConfigError(f"{p}: key 'factors' missing; regenerate it with calibrate()")
    return data


DEFAULT_FACTORS = {"eff_compute": 0.5, "eff_mem": 1.0, "per_op_overhead_us": 2.0, "per_run_overhead_us": 5.0,
                   "host_clock_ghz": 3.7}


def _runtime_key(runtime: str) -> str:
    r = runtime.lower()
    if r in ("onnx", "onnxruntime", "ort"):
        return "onnxruntime"
    if r in ("tflite", "litert", "ai_edge_litert", "tflite_runtime", "tensorflow.lite"):
        return "tflite"
    raise ConfigError(f"runtime {runtime!r} is not modelled; use 'onnxruntime' or 'tflite'")


def factors_for(calibration: dict, runtime: str, dtype: str, measured: bool = False) -> tuple[dict, str]:
    """Calibration factors for ``runtime-dtype`` with graceful fall-backs; returns (factors, key used).

    ``measured``: the target's peak compute is a measured (achieved) figure, so use the factors fitted
    against the host's measured peaks (key suffix ``@measured``) when they exist."""
    fac = calibration.get("factors", {})
    rt = _runtime_key(runtime)
    suffixes = ("@measured", "") if measured else ("",)
    for key in (f"{rt}-{dtype}", f"{rt}-fp32", f"onnxruntime-{dtype}", "onnxruntime-fp32"):
        for suf in suffixes:
            if key + suf in fac:
                return fac[key + suf], key + suf
    return DEFAULT_FACTORS, "uncalibrated-defaults"


def _peak_key(dtype: str) -> str:
    return "peak_int8_gops" if dtype == "int8" else "peak_fp32_gflops"


def _target(target):
    from ..targets import Target, load_target

    return target if isinstance(target, Target) else load_target(target)


def op_times_us(gc: GraphCost, peak_gops: float, bw_gbs: float, eff_compute: float, eff_mem: float) -> list:
    """Roofline time (us) of each op without overheads: (compute_us, memory_us) pairs."""
    out = []
    for o in gc.ops:
        c = o.work / (peak_gops * 1e3 * eff_compute)  # GFLOP/s -> flop/us = *1e3
        m = o.bytes / (bw_gbs * 1e3 * eff_mem)
        out.append((c, m))
    return out


def predict(onnx_path, target, *, dtype: str = "fp32", calibration=None, runtime: Optional[str] = None,
            threads: Optional[int] = None, detail: bool = False) -> dict:
    """Predict latency and peak memory of ``onnx_path`` on ``target`` (name, path or Target).

    ``dtype``: "fp32" or "int8" (an fp32 graph with dtype="int8" is costed as its fully quantized version, so
    a TFLite INT8 artifact can be predicted from the ONNX graph of the same model). ``runtime``: "onnxruntime"
    or "tflite" (default: the profile's preferred runtime) selects the calibration. ``threads``: default the
    profile's; the peak compute is scaled linearly with threads / profile threads (an optimistic assumption).
    """
    t = _target(target)
    cal = load_calibration(calibration)
    runtime = runtime or t.runtime.get("preferred", "onnx")
    measured = t.device[_peak_key(dtype)].basis == "measured"
    f, key = factors_for(cal, runtime, dtype, measured=measured)
    gc = analyze(onnx_path, dtype, pad_to=t.width_multiple)
    peak = t.peak_compute(dtype)
    th = threads or t.threads
    peak *= min(th, int(t.fact("cores", th))) / t.threads
    bw = float(t.fact("mem_bandwidth_gbs"))
    clock_scale = float(f.get("host_clock_ghz", 3.7)) / float(t.fact("clock_ghz", f.get("host_clock_ghz", 3.7)))
    per_op = float(f["per_op_overhead_us"]) * clock_scale
    per_run = float(f["per_run_overhead_us"]) * clock_scale
    times = op_times_us(gc, peak, bw, float(f["eff_compute"]), float(f["eff_mem"]))
    roof_us = sum(max(c, m) for c, m in times)
    overhead_us = per_op * len(gc.ops) + per_run
    latency_ms = (roof_us + overhead_us) / 1e3
    host = cal.get("host", {}).get("cpu", "host")
    tensor_mb = (gc.activation_peak_bytes + gc.weight_bytes) / MIB
    footprint = None
    if "mem_base_mb" in f:
        footprint = (f["mem_base_mb"] + f["mem_weight_factor"] * gc.weight_bytes / MIB
                     + f["mem_act_factor"] * gc.activation_peak_bytes / MIB)
    res = {
        "latency_ms": latency_ms,
        "peak_memory_mb": tensor_mb,
        "model_footprint_mb": footprint,
        "activation_peak_mb": gc.activation_peak_bytes / MIB,
        "weight_mb": gc.weight_bytes / MIB,
        "macs": gc.macs,
        "flops": gc.flops,
        "weight_bytes": gc.weight_bytes,
        "n_ops": len(gc.ops),
        "compute_bound_ops": sum(1 for c, m in times if c >= m),
        "roofline_ms": roof_us / 1e3,
        "overhead_ms": overhead_us / 1e3,
        "target": t.name,
        "runtime": _runtime_key(runtime),
        "dtype": dtype,
        "threads": th,
        "calibration_key": key,
        "source": "predicted",
        "model": f"{MODEL_NAME} (calibrated on host {host}, {key}; target peaks from profile {t.name})"
        if key != "uncalibrated-defaults" else f"{MODEL_NAME} (UNCALIBRATED default factors)",
    }
    if detail:
        res["ops"] = [
            {"name": o.name, "op_type": o.op_type, "fused": o.fused, "macs": o.macs, "flops": o.flops,
             "bytes": o.bytes, "compute_us": c, "memory_us": m}
            for o, (c, m) in zip(gc.ops, times)
        ]
    return res


# ----------------------------------------------------------------------------------- calibration


def _features(gc: GraphCost, peak: float, bw: float, r: float) -> float:
    """sum_op max(flops/peak, r * bytes/bw) in us (r = eff_compute / eff_mem)."""
    return sum(max(o.work / (peak * 1e3), r * o.bytes / (bw * 1e3)) for o in gc.ops)


def _nnls_small(A, b):
    """Non-negative least squares for a handful of columns by enumerating active sets."""
    import itertools

    import numpy as np

    n = A.shape[1]
    best = (math.inf, np.zeros(n))
    for k in range(1, n + 1):
        for cols in itertools.combinations(range(n), k):
            sub = A[:, cols]
            x, *_ = np.linalg.lstsq(sub, b, rcond=None)
            if (x < 0).any():
                continue
            full = np.zeros(n)
            full[list(cols)] = x
            err = float(((A @ full - b) ** 2).sum())
            if err < best[0]:
                best = (err, full)
    return best[1]


def fit_factors(samples: list, target="host", *, dtype: str = "fp32") -> dict:
    """Fit eff_compute, eff_mem, per_op_overhead_us, per_run_overhead_us on (GraphCost | onnx path, ms) pairs.

    With (path, ms, model_footprint_mb) triples it also fits the memory model
    ``footprint = mem_base_mb + mem_weight_factor * weights + mem_act_factor * activation peak`` (MiB)."""
    import numpy as np

    t = _target(target)
    peak, bw = t.peak_compute(dtype), float(t.fact("mem_bandwidth_gbs"))
    samples = [tuple(x) for x in samples]
    gcs = [(s[0] if isinstance(s[0], GraphCost) else analyze(s[0], dtype, pad_to=t.width_multiple), float(s[1]))
           for s in samples]
    foot = [float(s[2]) for s in samples if len(s) > 2 and s[2] is not None]
    if len(gcs) < 3:
        raise InputError(f"calibration needs at least 3 measured models, got {len(gcs)}")
    y = np.array([ms * 1e3 for _, ms in gcs])
    nops = np.array([len(g.ops) for g, _ in gcs], dtype=float)
    best = None
    for r in np.logspace(-3, 3, 121):
        X = np.array([_features(g, peak, bw, r) for g, _ in gcs])
        A = np.stack([X, nops, np.ones_like(X)], axis=1) / y[:, None]
        x = _nnls_small(A, np.ones_like(y))
        pred = np.stack([X, nops, np.ones_like(X)], axis=1) @ x
        err = float(np.sum(((pred - y) / y) ** 2))
        if x[0] > 0 and (best is None or err < best[0]):
            best = (err, r, x, pred)
    if best is None:
        raise InputError("calibration failed: no positive compute scale fits the measurements; check them")
    _, r, (a, c, d), pred = best
    ape = np.abs(pred - y) / y * 100
    mem = {}
    if len(foot) == len(gcs):
        # model footprint (MiB) = base + k_w * weights + k_a * activation peak, non-negative least squares
        F_ = np.array(foot)
        A = np.stack([np.ones(len(gcs)), [g.weight_bytes / MIB for g, _ in gcs],
                      [g.activation_peak_bytes / MIB for g, _ in gcs]], axis=1)
        base, kw, ka = _nnls_small(A, F_)
        mem = {"mem_base_mb": float(base), "mem_weight_factor": float(kw), "mem_act_factor": float(ka),
               "mem_fit_median_abs_err_mb": float(np.median(np.abs(A @ np.array([base, kw, ka]) - F_)))}
    return {
        "eff_compute": float(1.0 / a),
        "eff_mem": float(1.0 / (r * a)),
        "per_op_overhead_us": float(c),
        "per_run_overhead_us": float(d),
        "host_clock_ghz": float(t.fact("clock_ghz")),
        "host_peak_gops": peak,
        "host_bandwidth_gbs": bw,
        "host_peak_basis": t.device[_peak_key(dtype)].basis,
        "host_width_multiple": t.width_multiple,
        "n_models": len(gcs),
        "fit_median_abs_pct_err": float(np.median(ape)),
        **mem,
    }


def calibrate(samples: Iterable, *, runtime: str = "onnxruntime", dtype: str = "fp32", target="host",
              out=None, machine: Optional[dict] = None, note: Optional[str] = None) -> dict:
    """Fit the factors for ``runtime-dtype`` on ``samples`` = [(onnx_path, measured_p50_ms[, model_footprint_mb]), ...]
    measured
    on ``target`` (default the ``host`` profile; a profile with a measured peak stores the factors under
    ``runtime-dtype@measured``, used for targets whose peak is measured too) and merge them into ``out`` (default: none written; pass
    ``CALIBRATION_PATH`` to update the packaged file). Returns the whole calibration dict."""
    t = _target(target)
    fac = fit_factors(list(samples), t, dtype=dtype)
    key = f"{_runtime_key(runtime)}-{dtype}" + ("@measured" if fac["host_peak_basis"] == "measured" else "")
    fac["fitted"] = _dt.date.today().isoformat()
    if note:
        fac["note"] = note
    p = Path(out) if out is not None else None
    data = load_calibration(p) if p is not None and p.is_file() else {"version": 1, "factors": {}}
    data["model"] = MODEL_NAME
    data["host"] = {"profile": t.name, "cpu": t.fact("cpu")}
    if machine:
        data["host"]["machine"] = machine
    data["factors"][key] = fac
    if p is not None:
        p.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data
