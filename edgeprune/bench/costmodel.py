"""Roofline cost model: predict a model's latency and peak memory on a target from its ONNX graph.

Model ("roofline-v2"), per operator after the fusions every CPU runtime does (activation into Conv/Gemm,
constant Add/Mul/BatchNorm into Conv, QuantizeLinear/DequantizeLinear into the int8 op, views are free,
constant sub-graphs are folded)::

    t_op    = max(work / compute_rate(op), bytes / (mem_bandwidth * eff_mem(op))) + per_op_overhead
    latency = sum(t_op) + per_run_overhead

``work`` is the op's FLOPs with its output channels rounded up to the profile's ``width_multiple`` (SIMD
kernels compute whole vectors); ``bytes`` = weights + activation inputs + outputs (1 byte per int8 element).

ON THIS HOST (target ``host`` = :func:`host_profile`): ``compute_rate = spec peak x eff_compute``, where the
spec peak is derived from /proc/cpuinfo (ISA width x FMA units x nominal clock, formula in the fact's source)
and ``eff_compute``, ``eff_mem``, the overheads (and the memory model below) are fitted per runtime and
precision (onnxruntime-fp32, onnxruntime-int8, tflite-fp32, tflite-int8) on the built-in models measured on
this host (:mod:`edgeprune.bench.hostcal`; ``edgeprune calibrate --host`` caches a calibration for a new CPU;
benchmarks/costmodel/results.md has the leave-one-model-out error).

ON A TARGET the host's efficiencies are NOT transferred (x86 AVX-512 kernels reach a much larger share of
their peak than ARM NEON ones): ``compute_rate`` is the profile's SUSTAINED throughput
(``sustained_fp32_gflops`` / ``sustained_int8_gops`` at the profile's threads, ``sustained_1t_fp32_gflops``
on one thread), taken from a published benchmark of the device (basis "derived", source in the profile),
from another board's published efficiency (basis "unverified"), or measured by ``edgeprune calibrate`` on
the device (basis "measured"). Ops under ``THREAD_MIN_FLOPS`` run at the one-thread rate (thread-pool
dispatch costs more than it saves on them). Memory: the DRAM bandwidth of the profile, with the host's
fitted ``eff_mem`` kept only for ops whose bytes fit in the target's L2 cache (else capped at 1). Per-op and
per-run overheads = the host's x (host per-lane speed / target per-lane speed), per-lane speed = one-thread
sustained GFLOP/s / fp32 SIMD lanes (overheads are scalar work), or the device's measured per-op overhead.
Every target prediction carries ``uncertainty`` ("unvalidated on the device; ±2x" ...): nothing here was
checked against a real board.

Memory: ``peak_memory_mb`` is the ONE predicted model-memory figure, used by the budget and the report: the
quantity the runner measures as ``model_footprint_mb`` (peak RSS minus the runtime's import footprint) =
session base + k_w x weights + k_a x activation liveness peak, fitted on the host (``peak_memory_how`` says
so); ``tensor_mb`` (weights + activation liveness peak, a lower bound) is reported beside it. The runtime's
own import footprint is measured separately (``runtime_footprint_mb`` of the runner). All sizes are MiB.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional

from ..errors import ConfigError, InputError

CALIBRATION_PATH = Path(__file__).with_name("calibration.json")
MODEL_NAME = "roofline-v2"
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
    kind: str = "other"  # conv (dense) | dwconv (grouped) | gemm | other
    k_red: float = 0.0  # reduction length per output element (MACs per output): cin/group x kernel, or K

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
    n_views: int = 0  # Reshape/Flatten/... on activations: no compute, but the runtime dispatches them

    @property
    def n_dispatched(self) -> int:
        """Ops the runtime dispatches (each costs the per-op overhead): ops that run + views."""
        return len(self.ops) + self.n_views

    def to_dict(self) -> dict:
        return {"macs": self.macs, "flops": self.flops, "weight_bytes": self.weight_bytes,
                "activation_peak_bytes": self.activation_peak_bytes, "n_ops": len(self.ops),
                "n_views": self.n_views, "n_nodes": self.n_nodes, "dtype": self.dtype}


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


def analyze(onnx_model, dtype: str = "fp32", pad_to: int = 1, fuse_add: bool = False) -> GraphCost:
    """Per-operator MACs/FLOPs/bytes and the activation liveness peak of an ONNX graph (batch = 1).

    ``pad_to``: SIMD width in channels (a profile's ``width_multiple``): the output channels of Conv/Gemm/MatMul
    are rounded up to it for the time estimate (``OpCost.work``), since kernels compute whole vectors; the
    reported MACs/FLOPs stay exact. ``fuse_add``: a residual Add of two activations is fused into the conv
    that produces its later input (onnxruntime's Conv+Add(+Relu) fusion; TFLite/XNNPACK keeps the Add)."""
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
    n_views = 0

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
                n_views += t in VIEW_OPS and t not in ("Identity", "Dropout")
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
        # residual Add into the conv that produced its later input (onnxruntime)
        if fuse_add and t == "Add" and len(dyn) == 2 and not cst:
            prods = [(ops.index(op_of_output[x]), x) for x in dyn if x in op_of_output
                     and op_of_output[x].op_type == "Conv" and not op_of_output[x].fused]
            if prods:
                _, x = max(prods)
                other = dyn[1] if x == dyn[0] else dyn[0]
                if len(consumers.get(x, [])) == 1 and x not in graph_outputs:
                    prod_op = op_of_output[x]
                    prod_op.flops += out_el
                    if prod_op.flops_eff >= 0:
                        prod_op.flops_eff += out_el
                    prod_op.act_bytes += nbytes(root(other))
                    prod_op.fused.append(t)
                    alias[out] = x
                    op_of_output[out] = prod_op
                    continue
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
            group = attrs["group"].i if "group" in attrs else 1
            oc.kind = "dwconv" if group > 1 else "conv"
            x, w = ins[0], ins[1] if t != "QLinearConv" else ins[3]
            ws = shapes.get(w) or []
            if t == "ConvTranspose":
                cout_g = (ws[1] if len(ws) > 1 else 1)
                oc.macs = nelem(x) * cout_g * _prod(ws[2:])
            else:
                cin_g = ws[1] if len(ws) > 1 else 1
                oc.macs = out_el * cin_g * _prod(ws[2:])
                oc.k_red = float(cin_g * _prod(ws[2:]))
            oc.flops = 2 * oc.macs + out_el * (len(ins) > 2)
            cout = float(ws[0]) if ws else 0.0
            if t == "ConvTranspose" and len(ws) > 1:
                cout = float(ws[1] * group)
            if cout > 0:
                oc.flops_eff = oc.flops * _pad(cout, pad_to) / cout
        elif t in MATMUL_OPS:
            oc.kind = "gemm"
            a = ins[0]
            sa = shapes.get(a) or [1]
            if t == "Gemm":
                ta = attrs["transA"].i if "transA" in attrs else 0
                k = sa[0] if ta else sa[-1]
            else:
                k = sa[-1]
            oc.macs = out_el * k
            oc.k_red = float(k)
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
                     weight_bytes=weight_bytes, activation_peak_bytes=peak, dtype=dtype, n_nodes=len(nodes),
                     n_views=n_views)


# ----------------------------------------------------------------------------------- calibration data


def load_calibration(calibration=None) -> dict:
    """The calibration dict: ``None`` -> this host's cached calibration (``edgeprune calibrate --host``) if one
    exists for this CPU, else the packaged calibration.json; a path -> that file; a dict -> itself."""
    if isinstance(calibration, dict):
        return calibration
    if calibration is None:
        from .hostcal import cached_calibration_path

        cached = cached_calibration_path()
        p = cached if cached.is_file() else CALIBRATION_PATH
        if not p.is_file():
            return {"version": 2, "factors": {}}
    else:
        p = Path(calibration)
        if not p.is_file():
            raise InputError(f"calibration file {p} not found; run `edgeprune calibrate --host` or pass None")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: malformed calibration JSON ({e}); regenerate it with `edgeprune calibrate --host`") from None
    if not isinstance(data.get("factors"), dict):
        raise ConfigError(f"{p}: key 'factors' missing; regenerate it with `edgeprune calibrate --host`")
    data.setdefault("_path", "packaged calibration.json" if p == CALIBRATION_PATH else
                    ("user cache" if calibration is None else str(p)))
    return data


def calibration_info(cal: dict) -> dict:
    """Where the calibration comes from and whether it was measured on this kind of CPU."""
    from .hostcal import fingerprint

    here = fingerprint()
    fp = cal.get("fingerprint")
    return {"host_cpu": (cal.get("host") or {}).get("cpu"), "fingerprint": fp, "this_host": here,
            "matches_this_host": fp == here, "where": cal.get("_path", "given"),
            "host_error_median_abs_pct": {k: v.get("lomo_median_abs_pct_err") for k, v in cal.get("factors", {}).items()
                                          if v.get("lomo_median_abs_pct_err") is not None}}


#: used when no calibration exists at all (labelled "UNCALIBRATED" in every prediction)
DEFAULT_FACTORS = {"eff_compute": 0.3, "eff_mem": 1.0, "eff_mem_large": 1.0, "per_op_overhead_us": 2.0,
                   "per_run_overhead_us": 5.0, "mem_base_mb": None}


def runtime_key(runtime: str) -> str:
    """'onnxruntime' or 'tflite' for any of the runtime / format spellings."""
    r = runtime.lower()
    if r in ("onnx", "onnxruntime", "ort"):
        return "onnxruntime"
    if r in ("tflite", "litert", "ai_edge_litert", "tflite_runtime", "tensorflow.lite"):
        return "tflite"
    raise ConfigError(f"runtime {runtime!r} is not modelled; use 'onnxruntime' or 'tflite'")


def factors_for(calibration: dict, runtime: str, dtype: str) -> tuple[dict, str]:
    """Calibration factors for ``runtime-dtype``, falling back to the runtime's fp32 then onnxruntime's;
    returns (factors, key used)."""
    fac = calibration.get("factors", {})
    rt = runtime_key(runtime)
    for key in (f"{rt}-{dtype}", f"{rt}-fp32", f"onnxruntime-{dtype}", "onnxruntime-fp32"):
        if key in fac:
            return fac[key], key
    return DEFAULT_FACTORS, "uncalibrated-defaults"


def graph_for_artifact(artifacts: dict, fmt: str) -> Optional[str]:
    """The ONNX graph the cost model reads for artifact ``fmt`` ({format: path} of the artifacts that exported).

    TFLite artifacts are costed from the same model's ONNX graph: the QDQ graph for tflite-int8 when it
    exported (else the fp32 graph, costed as int8)."""
    cands = ("onnx-int8", "onnx") if fmt.endswith("int8") else ("onnx",)
    for c in cands:
        if artifacts.get(c):
            return artifacts[c]
    return None


def fuses_add(runtime: str, dtype: str) -> bool:
    """onnxruntime fuses a residual Add (+Relu) into the float Conv before it; its QDQ graphs and TFLite do not."""
    return runtime_key(runtime) == "onnxruntime" and dtype == "fp32"


def runtime_of(fmt: str) -> str:
    """The runtime that runs artifact format ``fmt``."""
    return "tflite" if fmt.startswith("tflite") else "onnxruntime"


# ----------------------------------------------------------------------------------- the host


@lru_cache(maxsize=1)
def host_bandwidth_gbs() -> float:
    """Streaming bandwidth of this host, measured: numpy copy of 64 MiB, (read + write bytes) / best of 10."""
    import time

    import numpy as np

    a = np.ones(16 * 2**20, np.float32)
    b = np.zeros_like(a)  # touched, so page faults are not timed
    best = math.inf
    for _ in range(10):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return round(2 * a.nbytes / best / 1e9, 1)


@lru_cache(maxsize=1)
def host_profile():
    """The ``host`` profile with THIS machine's facts: CPU and cores from /proc/cpuinfo, spec peaks derived
    from its ISA flags and nominal clock (formula in each fact's source), streaming bandwidth measured."""
    import dataclasses

    from ..targets import Fact, load_target
    from .hostcal import host_spec

    base = load_target("host")
    s = host_spec()
    dev = dict(base.device)
    dev["cpu"] = Fact(f"{s['cpu']} ({s['isa']})", None, "/proc/cpuinfo: model name and flags", "measured")
    dev["cores"] = Fact(int(s["cores"] or 1), "count", "os.cpu_count()", "measured")
    dev["clock_ghz"] = Fact(s["clock_ghz"], "GHz", "cpu MHz in /proc/cpuinfo", "measured",
                            "a VM reports the nominal (TSC) clock, not the boost clock")
    dev["peak_fp32_gflops"] = Fact(s["peak_fp32_gflops"], "GFLOP/s", s["formula"], "derived")
    dev["peak_int8_gops"] = Fact(s["peak_int8_gops"], "GOP/s", s["formula"], "derived")
    dev["mem_bandwidth_gbs"] = Fact(host_bandwidth_gbs(), "GB/s", "numpy copy of 64 MiB, best of 10", "measured")
    dev["int8_dot_product"] = Fact(bool(s["int8_dot"]), None, "/proc/cpuinfo flags", "measured")
    dev["simd_fp32_lanes"] = Fact(int(s["lanes"]), "count", f"/proc/cpuinfo flags ({s['isa']})", "measured")
    if s.get("l2_kb"):
        dev["l2_cache_kb"] = Fact(float(s["l2_kb"]), "KiB", "/sys/devices/system/cpu/cpu0/cache (L2)", "measured")
    return dataclasses.replace(base, device=dev, title=f"This host ({s['cpu']})", source_path="<this host>",
                               width_multiple=int(s["lanes"]))


def _is_host(t) -> bool:
    return t.name == "host"


def _target(target):
    from ..targets import Target, load_target

    if isinstance(target, Target):
        return target
    return host_profile() if str(target) == "host" else load_target(target)


# ----------------------------------------------------------------------------------- rates


#: ops with fewer FLOPs run on one thread (thread-pool dispatch costs more than it saves): an assumption
THREAD_MIN_FLOPS = 0.5e6
#: extra speed per extra host thread for large ops (host predictions with threads > 1 only): an assumption
HOST_THREAD_EFFICIENCY = 0.7
#: cache assumed when a profile has no l2_cache_kb (KiB)
DEFAULT_CACHE_KB = 512
#: fraction of the spec peak assumed when a profile has no sustained-throughput fact
DEFAULT_SUSTAINED_FRACTION = 0.3
UNCERTAINTY = {"measured": "calibrated with micro-benchmarks on the device, not validated on full models: ±50%",
               "derived": "from a published benchmark of this device, not validated here: ±2x",
               "unverified": "no benchmark of this device: efficiency borrowed from another board, ±3x",
               "spec": "spec-sheet figure, not validated: ±3x", "assumed": "assumed efficiency: ±3x"}


@dataclass
class Rates:
    """What the roofline needs for one (target, runtime, dtype, threads): throughputs, bandwidth, overheads."""

    compute_gops: float        # large ops (>= THREAD_MIN_FLOPS), all threads
    compute_1t_gops: float     # small ops, one thread
    bw_gbs: float
    eff_mem_cached: float      # bandwidth multiplier for an op whose bytes fit in the cache
    eff_mem_dram: float        # ... and for one whose bytes do not
    cache_bytes: float
    per_op_us: float
    per_run_us: float
    basis: str                 # of the compute figure: measured | derived | unverified | assumed
    how: str                   # one sentence: where the figures come from
    uncertainty: str

    def op_us(self, o: OpCost) -> tuple[float, float]:
        """(compute, memory) time of one op in microseconds (GFLOP/s = 1e3 flop/us)."""
        rate = self.compute_gops if o.work >= THREAD_MIN_FLOPS else self.compute_1t_gops
        eff = self.eff_mem_cached if o.bytes <= self.cache_bytes else self.eff_mem_dram
        return o.work / (rate * 1e3), o.bytes / (self.bw_gbs * 1e3 * eff)


def _peak_key(dtype: str) -> str:
    return "peak_int8_gops" if dtype == "int8" else "peak_fp32_gflops"


def host_rates(t, f: dict, dtype: str, threads: int, err: Optional[float]) -> Rates:
    """Rates on the host: spec peak x fitted efficiency, fitted overheads; threads > 1 speed up large ops
    by HOST_THREAD_EFFICIENCY per extra core (an assumption; the calibration is measured on one thread)."""
    one = t.peak_compute(dtype) * float(f["eff_compute"])
    n = min(threads, int(t.fact("cores", threads)))
    bw = float(f.get("host_bandwidth_gbs") or t.fact("mem_bandwidth_gbs"))
    unc = (f"host: median abs error {err:.0f}% over the built-in models (leave-one-model-out, "
           "benchmarks/costmodel/results.md)" if err is not None else "host: error not measured")
    return Rates(compute_gops=one * (1 + HOST_THREAD_EFFICIENCY * (n - 1)), compute_1t_gops=one, bw_gbs=bw,
                 eff_mem_cached=float(f["eff_mem"]), eff_mem_dram=float(f.get("eff_mem_large", f["eff_mem"])),
                 cache_bytes=float(f.get("host_cache_kb") or t.fact("l2_cache_kb", DEFAULT_CACHE_KB)) * 1024,
                 per_op_us=float(f["per_op_overhead_us"]), per_run_us=float(f["per_run_overhead_us"]),
                 basis="measured", how="host spec peak x efficiency fitted on this host's measurements",
                 uncertainty=unc)


def sustained(t, dtype: str) -> tuple[float, float, str, str]:
    """(GFLOP/s at the profile's threads, GFLOP/s on one thread, basis, source) of a target for ``dtype``.

    From the profile's ``sustained_fp32_gflops`` / ``sustained_1t_fp32_gflops`` / ``sustained_int8_gops``
    facts (a published or measured benchmark of the device); without them DEFAULT_SUSTAINED_FRACTION of the
    spec peak. One-thread INT8 = sustained INT8 x the fp32 one-thread/all-threads ratio."""
    fp = t.device.get("sustained_fp32_gflops")
    one = t.device.get("sustained_1t_fp32_gflops")
    if fp is None:
        peak = t.peak_compute(dtype)
        frac = DEFAULT_SUSTAINED_FRACTION
        return (peak * frac, peak * frac / t.threads, "assumed",
                f"{frac:.0%} of the spec peak (no sustained-throughput fact in the profile)")
    ratio = (one.value / fp.value) if one is not None else 1.0 / t.threads
    if dtype == "int8":
        i8 = t.device.get("sustained_int8_gops")
        if i8 is not None:
            return i8.value, i8.value * ratio, i8.basis, i8.source
        return (fp.value * 2.0, fp.value * 2.0 * ratio, "assumed",
                "2x the sustained fp32 figure (no sustained_int8_gops fact)")
    return fp.value, fp.value * ratio, fp.basis, fp.source


def target_rates(t, f: dict, f_ref: dict, dtype: str, threads: int, host, f_ort: Optional[dict] = None) -> Rates:
    """Rates on a target (see the module docstring): sustained throughput from the profile, bandwidth capped
    at the DRAM figure for working sets larger than the target's cache, overheads scaled from the host.
    ``f``: the runtime-dtype factors, ``f_ref``: the same runtime's fp32 ones, ``f_ort``: onnxruntime-fp32's
    (the runtime a device's measured per-op overhead comes from; default ``f_ref``)."""
    big, small, basis, src = sustained(t, dtype)
    n = min(threads, int(t.fact("cores", threads)))
    if n != t.threads:  # between one thread and the profile's threads: linear in the thread count, capped
        frac = (min(n, t.threads) - 1) / max(t.threads - 1, 1)
        big = small + (big - small) * frac
    measured_op = t.device.get("per_op_overhead_us")
    # per-op overhead is scalar work: it scales with per-lane speed (1-thread fp32 GFLOP/s / SIMD lanes)
    host_lane = float(f_ref["eff_compute"]) * host.peak_compute("fp32") / float(host.fact("simd_fp32_lanes", 16))
    _, t_1t_fp32, _, _ = sustained(t, "fp32")
    tgt_lane = t_1t_fp32 / float(t.fact("simd_fp32_lanes", 4))
    scale = host_lane / tgt_lane
    if measured_op is not None:  # measured on the device (onnxruntime fp32): keep this runtime's relative cost
        op_scale = float(measured_op.value) / float((f_ort or f_ref)["per_op_overhead_us"])
        per_op, how_op = float(f["per_op_overhead_us"]) * op_scale, "per-op overhead measured on the device"
    else:
        per_op, how_op = float(f["per_op_overhead_us"]) * scale, f"per-op overhead = host's x {scale:.2f} (per-lane speed ratio)"
    return Rates(compute_gops=big, compute_1t_gops=small, bw_gbs=float(t.fact("mem_bandwidth_gbs")),
                 eff_mem_cached=max(float(f["eff_mem"]), 1.0), eff_mem_dram=1.0,
                 cache_bytes=float(t.fact("l2_cache_kb", DEFAULT_CACHE_KB)) * 1024,
                 per_op_us=per_op, per_run_us=float(f["per_run_overhead_us"]) * scale, basis=basis,
                 how=f"sustained {big:.3g} GOP/s ({n} threads) / {small:.3g} (1 thread): {src}; {how_op}",
                 uncertainty="unvalidated on the device; " + UNCERTAINTY.get(basis, UNCERTAINTY["assumed"]))


# ----------------------------------------------------------------------------------- prediction


def footprint_mb(f: dict, gc: GraphCost) -> tuple[Optional[float], str]:
    """Predicted model memory (MiB), the quantity the runner measures as ``model_footprint_mb`` (peak RSS minus
    the runtime's import footprint): session base + k_w x weights + k_a x activation peak, fitted on the host;
    without those factors the tensor lower bound (weights + activation liveness peak)."""
    tensors = (gc.weight_bytes + gc.activation_peak_bytes) / MIB
    if f.get("mem_base_mb") is None:
        return tensors, "tensor lower bound (weights + activation liveness peak); no memory calibration"
    v = (f["mem_base_mb"] + f["mem_weight_factor"] * gc.weight_bytes / MIB
         + f["mem_act_factor"] * gc.activation_peak_bytes / MIB)
    return v, (f"session base {f['mem_base_mb']:.1f} MiB + {f['mem_weight_factor']:.2f} x weights + "
               f"{f['mem_act_factor']:.2f} x activation peak (fitted on the host's runtime)")


def predict(onnx_path, target, *, dtype: str = "fp32", calibration=None, runtime: Optional[str] = None,
            threads: Optional[int] = None, detail: bool = False) -> dict:
    """Predict latency and peak memory of ``onnx_path`` on ``target`` (name, path or Target; "host" = this
    machine, see :func:`host_profile`).

    ``dtype``: "fp32" or "int8" (an fp32 graph with dtype="int8" is costed as its fully quantized version).
    ``runtime``: "onnxruntime" or "tflite" (default: the profile's preferred runtime) selects the calibrated
    factors. ``threads``: default the profile's. Every figure is labelled ``"source": "predicted"`` with the
    model, the calibration's host and an ``uncertainty`` sentence."""
    t = _target(target)
    if _is_host(t) and t.source_path != "<this host>":  # the host.toml profile: use this machine's facts
        import dataclasses

        t = dataclasses.replace(host_profile(), threads=t.threads, runtime=t.runtime, budget=t.budget)
    cal = load_calibration(calibration)
    runtime = runtime_key(runtime or t.runtime.get("preferred", "onnx"))
    f, key = factors_for(cal, runtime, dtype)
    f_ref, _ = factors_for(cal, runtime, "fp32")
    th = threads or t.threads
    err = f.get("lomo_median_abs_pct_err")
    if _is_host(t):
        r = host_rates(t, f, dtype, th, err)
    else:
        r = target_rates(t, f, f_ref, dtype, th, host_profile(), factors_for(cal, "onnxruntime", "fp32")[0])
    gc = analyze(onnx_path, dtype, pad_to=t.width_multiple, fuse_add=fuses_add(runtime, dtype))
    times = [r.op_us(o) for o in gc.ops]
    roof_us = sum(max(c, m) for c, m in times)
    overhead_us = r.per_op_us * gc.n_dispatched + r.per_run_us
    mem, mem_how = footprint_mb(f, gc)
    info = calibration_info(cal)
    host_cpu = info["host_cpu"] or "unknown host"
    where = "this host" if info["matches_this_host"] else f"another host ({host_cpu}), not this one"
    res = {
        "latency_ms": (roof_us + overhead_us) / 1e3,
        "peak_memory_mb": mem,
        "peak_memory_how": mem_how,
        "tensor_mb": (gc.weight_bytes + gc.activation_peak_bytes) / MIB,
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
        "runtime": runtime,
        "dtype": dtype,
        "threads": th,
        "calibration_key": key,
        "calibration": info,
        "basis": r.basis,
        "how": r.how,
        "uncertainty": r.uncertainty,
        "source": "predicted",
        "model": (f"{MODEL_NAME}, {key} factors calibrated on {where}" if key != "uncalibrated-defaults"
                  else f"{MODEL_NAME}, UNCALIBRATED default factors"),
    }
    if detail:
        res["ops"] = [{"name": o.name, "op_type": o.op_type, "fused": o.fused, "macs": o.macs, "flops": o.flops,
                       "bytes": o.bytes, "compute_us": c, "memory_us": m} for o, (c, m) in zip(gc.ops, times)]
    return res


# ----------------------------------------------------------------------------------- fitting


FIT_PARAMS = ("eff_compute", "eff_mem", "eff_mem_large", "per_op_overhead_us", "per_run_overhead_us")
# fitted in log space as (eff_compute, eff_mem, eff_mem_large / eff_mem <= 1, per-op, per-run)
_FIT_LO = (1e-3, 1e-2, 1e-2, 1e-3, 1e-3)
_FIT_HI = (5.0, 100.0, 1.0, 50.0, 50.0)
_FIT_STARTS = ((0.5, 3.0, 0.5, 1.0, 1.0), (0.9, 10.0, 0.3, 0.5, 2.0))


def _fit_rows(gc: GraphCost, peak: float, bw: float, cache_bytes: float) -> tuple:
    """(per-op (compute us at eff 1, memory us at eff 1, fits in cache), ops dispatched) for fitting."""
    return ([(o.work / (peak * 1e3), o.bytes / (bw * 1e3), o.bytes <= cache_bytes) for o in gc.ops],
            gc.n_dispatched)


def _fit_model(theta, rows) -> "list[float]":
    ec, em, ratio, c, d = (math.exp(x) for x in theta)
    eml = em * ratio
    return [sum(max(w / ec, b / (em if small else eml)) for w, b, small in ops) + c * n + d for ops, n in rows]


def fit_factors(samples: list, target="host", *, dtype: str = "fp32", fuse_add: bool = False) -> dict:
    """Fit eff_compute, eff_mem (ops whose bytes fit in the host's L2), eff_mem_large, per_op_overhead_us and
    per_run_overhead_us on (onnx path | GraphCost, measured ms[, model_footprint_mb]) samples measured on
    ``target`` (default: this host) at one thread: least squares on the relative error, in log space (all
    factors positive), from two starting points.

    With footprints it also fits the memory model ``footprint = mem_base_mb + mem_weight_factor * weights +
    mem_act_factor * activation peak`` (MiB, non-negative least squares)."""
    import numpy as np
    from scipy.optimize import least_squares

    t = _target(target)
    peak, bw = t.peak_compute(dtype), float(t.fact("mem_bandwidth_gbs"))
    cache = float(t.fact("l2_cache_kb", DEFAULT_CACHE_KB)) * 1024
    samples = [tuple(x) for x in samples]
    if len(samples) < 3:
        raise InputError(f"calibration needs at least 3 measured models, got {len(samples)}")
    gcs = [s[0] if isinstance(s[0], GraphCost) else analyze(s[0], dtype, pad_to=t.width_multiple, fuse_add=fuse_add)
           for s in samples]
    y = np.array([float(s[1]) * 1e3 for s in samples])
    rows = [_fit_rows(g, peak, bw, cache) for g in gcs]
    lo, hi = np.log(_FIT_LO), np.log(_FIT_HI)
    if not any(not small for ops, _ in rows for _, _, small in ops):
        lo[2] = -1e-9  # no op larger than the cache: its bandwidth cannot be fitted, keep eff_mem_large = eff_mem
    best = None
    for x0 in _FIT_STARTS:
        res = least_squares(lambda th: (np.array(_fit_model(th, rows)) - y) / y,
                            x0=np.clip(np.log(x0), lo, hi - 1e-12), bounds=(lo, hi))
        if best is None or res.cost < best.cost:
            best = res
    pred = np.array(_fit_model(best.x, rows))
    ec, em, ratio, c, d = (float(math.exp(x)) for x in best.x)
    out = dict(zip(FIT_PARAMS, (ec, em, em * ratio, c, d)))
    foot = [float(s[2]) for s in samples if len(s) > 2 and s[2] is not None]
    if len(foot) == len(gcs):
        F_ = np.array(foot)
        A = np.stack([np.ones(len(gcs)), [g.weight_bytes / MIB for g in gcs],
                      [g.activation_peak_bytes / MIB for g in gcs]], axis=1)
        base, kw, ka = _nnls_small(A, F_)
        out.update({"mem_base_mb": float(base), "mem_weight_factor": float(kw), "mem_act_factor": float(ka),
                    "mem_fit_median_abs_err_mb": float(np.median(np.abs(A @ np.array([base, kw, ka]) - F_)))})
    out.update({
        "fuse_add": fuse_add,
        "host_peak_gops": peak,
        "host_peak_basis": t.device[_peak_key(dtype)].basis,
        "host_peak_how": t.device[_peak_key(dtype)].source,
        "host_bandwidth_gbs": bw,
        "host_cache_kb": cache / 1024,
        "host_width_multiple": t.width_multiple,
        "n_models": len(gcs),
        "fit_median_abs_pct_err": float(np.median(np.abs(pred - y) / y * 100)),
    })
    return out


def _nnls_small(A, b):
    """Non-negative least squares for a handful of columns by enumerating active sets."""
    import itertools

    import numpy as np

    n = A.shape[1]
    best = (math.inf, np.zeros(n))
    for k in range(1, n + 1):
        for cols in itertools.combinations(range(n), k):
            x, *_ = np.linalg.lstsq(A[:, cols], b, rcond=None)
            if (x < 0).any():
                continue
            full = np.zeros(n)
            full[list(cols)] = x
            err = float(((A @ full - b) ** 2).sum())
            if err < best[0]:
                best = (err, full)
    return best[1]
