"""ONNX graph analysis for the cost model: per-operator work, bytes and fusions (:func:`analyze`).

Split out of :mod:`edgeprune.bench.costmodel` (which re-exports every name here); see its docstring for
the model the figures feed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import ConfigError, InputError

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
