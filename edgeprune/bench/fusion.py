"""The kernels a runtime actually runs for a model: its fused graph, read from the runtime itself.

nn-Meter's observation (MobiSys 2021): a runtime does not run the operators of the exported graph but fused
kernels (conv + batch-norm + activation, conv + residual add, ...), and latency is predicted well per kernel.
Here the fusion is not guessed from rules but read from the runtime:

- onnxruntime (:func:`ort_kernels`): the graph onnxruntime runs after its optimisations, saved with
  ``SessionOptions.optimized_model_filepath`` at ``ORT_ENABLE_ALL`` (the level the runner uses): batch-norm folded,
  activations and residual adds fused into ``FusedConv`` / NCHWc ``Conv``, ``MatMul+Add`` into ``Gemm``, the
  NCHWc layout reorders, and for QDQ int8 graphs the ``QLinearConv`` / ``QLinearAdd`` / ``QGemm`` kernels with
  their layout transposes. Shapes are propagated over that graph (:func:`_ort_shapes`).
- TFLite / LiteRT (:func:`tflite_kernels`): the operators of the ``.tflite`` file as the interpreter lists them
  (the converter already fused conv + bias + batch-norm + activation; XNNPACK runs the delegated ones).

Every kernel is a :class:`Kernel` with the shape features the per-kernel regression reads
(:mod:`edgeprune.bench.kernels`): type, MACs, input / output / weight bytes, channels, kernel size, groups.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import InputError

#: kernel types of the predictor (one regression each)
KERNEL_TYPES = ("conv", "pwconv", "dwconv", "gemm", "pool", "eltwise", "move", "view")
#: SIMD width in fp32 channels that the padded-MACs feature rounds channels to (AVX-512 / NCHWc block)
SIMD_CHANNELS = 16


@dataclass
class Kernel:
    op: str                 # the runtime's operator, e.g. "nchwc.Conv", "QLinearConv", "CONV_2D"
    type: str               # one of KERNEL_TYPES
    macs: float = 0.0
    in_bytes: float = 0.0   # activation inputs
    out_bytes: float = 0.0
    w_bytes: float = 0.0    # constant inputs (weights, bias, scales)
    cin: int = 0
    cout: int = 0
    k: int = 1              # kernel size (largest spatial extent)
    groups: int = 1
    fused: list = field(default_factory=list)  # what the runtime fused into it (activation, sum, ...)

    @property
    def bytes(self) -> float:
        return self.in_bytes + self.out_bytes + self.w_bytes

    @property
    def macs_padded(self) -> float:
        """MACs with input and output channels (per group) rounded up to SIMD_CHANNELS: what the kernel computes."""
        if self.macs <= 0 or self.cout <= 0:
            return self.macs
        cin_g = max(self.cin // max(self.groups, 1), 1)
        if self.type == "dwconv":
            return self.macs * _up(self.cout) / self.cout
        return self.macs * (_up(self.cout) / self.cout) * (_up(cin_g) / cin_g)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["macs_padded"] = self.macs_padded
        return d


def _up(n: int) -> int:
    return int(math.ceil(n / SIMD_CHANNELS) * SIMD_CHANNELS)


def _prod(xs) -> float:
    r = 1.0
    for x in xs:
        r *= float(x)
    return r


def conv_type(k: int, groups: int, cin: int) -> str:
    if groups > 1 and groups >= cin > 0:
        return "dwconv"
    return "pwconv" if k == 1 else "conv"


# ------------------------------------------------------------------------------------------- onnxruntime

_ORT_CONV = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcFusedConv", "ConvTranspose"}
_ORT_GEMM = {"Gemm", "FusedGemm", "QGemm", "MatMul", "FusedMatMul", "QLinearMatMul", "MatMulInteger",
             "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
_ORT_POOL = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "QLinearAveragePool",
             "QLinearGlobalAveragePool", "ReduceMean", "ReduceMax", "ReduceSum"}
_ORT_VIEW = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Shape"}
_ORT_MOVE = {"Transpose", "ReorderInput", "ReorderOutput", "Concat", "QLinearConcat", "Pad", "Slice", "Split",
             "Gather", "Resize", "Upsample", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Cast",
             "Expand", "Tile", "DepthToSpace", "SpaceToDepth"}
#: ops whose output is 8-bit
_ORT_INT8_OUT = {"QuantizeLinear", "QLinearConv", "QLinearAdd", "QLinearMul", "QLinearMatMul", "QLinearAveragePool",
                 "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax",
                 "DynamicQuantizeLinear"}
_ESIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


def ort_type(op: str, k: int = 1, groups: int = 1, cin: int = 0) -> str:
    if op in _ORT_CONV:
        return conv_type(k, groups, cin)
    if op in _ORT_GEMM:
        return "gemm"
    if op in _ORT_POOL:
        return "pool"
    if op in _ORT_VIEW:
        return "view"
    if op in _ORT_MOVE:
        return "move"
    return "eltwise"


def optimized_onnx(onnx_path, level: str = "all"):
    """The graph onnxruntime runs for ``onnx_path`` on this CPU (one thread), as an onnx ModelProto."""
    import onnx
    import onnxruntime as ort

    p = Path(onnx_path)
    if not p.is_file():
        raise InputError(f"ONNX file {p} not found; export the model first")
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.log_severity_level = 3  # the "hardware specific optimizations" warning of saving NCHWc graphs
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if level == "all"
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    with tempfile.TemporaryDirectory(prefix="edgeprune-ortopt-") as td:
        out = os.path.join(td, "optimized.onnx")
        so.optimized_model_filepath = out
        try:
            ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001
            raise InputError(f"onnxruntime cannot load {p} ({str(e).splitlines()[0]}); re-export it") from None
        return onnx.load(out)


def _attr(n, name, default=None):
    from onnx import helper

    for a in n.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _conv_out(x: list, w: list, n) -> list:
    """Output shape of a conv / pool node from input shape ``x`` (N, C, spatial...) and weight shape ``w``."""
    sp = x[2:]
    ks = _attr(n, "kernel_shape") or (w[2:] if w else [1] * len(sp))
    st = _attr(n, "strides") or [1] * len(sp)
    dl = _attr(n, "dilations") or [1] * len(sp)
    pads = _attr(n, "pads") or [0] * (2 * len(sp))
    auto = _attr(n, "auto_pad", "NOTSET")
    out = []
    for i, s in enumerate(sp):
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            out.append(int(math.ceil(s / st[i])))
        else:
            eff = dl[i] * (ks[i] - 1) + 1
            fn = math.ceil if _attr(n, "ceil_mode", 0) else math.floor
            out.append(int(fn((s + pads[i] + pads[i + len(sp)] - eff) / st[i])) + 1)
    cout = w[0] if w else x[1]
    return [x[0], cout] + out


def _ort_shapes(model, ref_shapes: dict) -> tuple[dict, dict]:
    """{tensor: shape}, {tensor: bytes per element} over onnxruntime's optimized graph.

    Tensors the optimizer kept have the original graph's (inferred) shapes (``ref_shapes``); the ones it
    created (NCHWc reorders, fused outputs) are computed from the node's inputs, weights and attributes."""
    g = model.graph
    shapes: dict = {}
    esize: dict = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.dim_value > 0 else 1 for d in tt.shape.dim]
        esize[vi.name] = _ESIZE.get(tt.elem_type, 4)
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
        esize[init.name] = _ESIZE.get(init.data_type, 4)
    for n in g.node:
        ins = [x for x in n.input if x]
        x = shapes.get(ins[0]) if ins else None
        op = n.op_type
        for o in n.output:
            if o in ref_shapes and o not in shapes:
                shapes[o] = list(ref_shapes[o])
        o = n.output[0] if n.output else None
        if o is None:
            continue
        if o not in esize:
            esize[o] = 1 if op in _ORT_INT8_OUT else 4 if op == "DequantizeLinear" else esize.get(ins[0], 4) if ins else 4
            if op == "QGemm" and len(ins) < 8:  # QGemm without y_scale outputs float
                esize[o] = 4
        if o in shapes or x is None:
            continue
        if op == "QLinearConcat" and len(ins) > 2:
            x = shapes.get(ins[2])
            if x is None:
                continue
        if _channels_last(n) and len(x) >= 3:  # NHWC kernels (onnxruntime's int8 layout): compute in NCHW
            tmp = dict(shapes)
            tmp[ins[0]] = _to_nchw(x)
            shapes[o] = _to_nhwc(_node_out_nchw(n, op, ins, tmp))
            continue
        shapes[o] = _node_out_nchw(n, op, ins, shapes)
    return shapes, esize


def _channels_last(n) -> bool:
    return bool(_attr(n, "channels_last", 0)) or n.op_type.startswith("Nhwc")


def _to_nchw(x: list) -> list:
    return [x[0], x[-1]] + list(x[1:-1])


def _to_nhwc(x: list) -> list:
    return [x[0]] + list(x[2:]) + [x[1]]


def _node_out_nchw(n, op: str, ins: list, shapes: dict) -> list:
    """Output shape of one node of the optimized graph in NCHW, from its inputs' shapes and attributes."""
    x = shapes[ins[0]]
    if op in ("Concat", "QLinearConcat"):  # QLinearConcat: y_scale, y_zero_point, then (x, scale, zp) triplets
        parts = [shapes.get(t) for t in (ins[2::3] if op == "QLinearConcat" else ins)]
        if all(parts) and parts:
            ax = int(_attr(n, "axis", 1)) % len(parts[0])
            return [sum(q[ax] for q in parts) if i == ax else d for i, d in enumerate(parts[0])]
        return list(x)
    if len(x) < 3 and op not in _ORT_GEMM and op != "Transpose":
        return list(x)
    if op in ("Conv", "FusedConv", "ConvInteger", "NhwcFusedConv"):
        return _conv_out(x, shapes.get(ins[1]), n)
    if op == "QLinearConv":
        return _conv_out(x, shapes.get(ins[3]), n)
    if op in ("MaxPool", "AveragePool", "QLinearAveragePool", "NhwcMaxPool"):
        return _conv_out(x, None, n)
    if op in ("GlobalAveragePool", "GlobalMaxPool", "QLinearGlobalAveragePool"):
        return x[:2] + [1] * (len(x) - 2)
    if op == "ReorderOutput":
        return [x[0], int(_attr(n, "channels", x[1]))] + x[2:]
    if op == "ReorderInput":
        return [x[0], _up(x[1])] + x[2:]
    if op in ("Gemm", "FusedGemm", "QGemm", "MatMul", "FusedMatMul", "MatMulInteger", "QLinearMatMul"):
        bi = {"QGemm": 3, "QLinearMatMul": 3}.get(op, 1)
        b = shapes.get(ins[bi]) if len(ins) > bi else None
        if b:
            tb = _attr(n, "transB", 0)
            return x[:-1] + [b[0] if tb else b[-1]]
    if op == "Transpose":
        perm = _attr(n, "perm") or list(reversed(range(len(x))))
        return [x[i] for i in perm]
    return list(x)


def _ref_shapes(onnx_path) -> dict:
    import onnx

    m = onnx.load(str(onnx_path))
    try:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001
        pass
    out = {}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            out[vi.name] = [d.dim_value if d.dim_value > 0 else 1 for d in tt.shape.dim]
    return out


def _stamp(path) -> tuple:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"model file {p} not found; export the model first")
    st = p.stat()
    return (str(p.resolve()), st.st_mtime_ns, st.st_size)


def ort_kernels(onnx_path) -> list[Kernel]:
    """The kernels onnxruntime (CPU, ORT_ENABLE_ALL) runs for ``onnx_path``, in execution order."""
    return list(_ort_kernels_cached(_stamp(onnx_path)))


@lru_cache(maxsize=256)
def _ort_kernels_cached(stamp: tuple) -> tuple:
    path = stamp[0]
    model = optimized_onnx(path)
    shapes, esize = _ort_shapes(model, _ref_shapes(path))
    consts = {i.name for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        op = n.op_type
        if op in ("Constant",):
            continue
        ins = [x for x in n.input if x]
        acts = [x for x in ins if x not in consts]
        wts = [x for x in ins if x in consts]

        def nb(t):
            s = shapes.get(t)
            return _prod(s) * esize.get(t, 4) if s is not None else 0.0

        kern = Kernel(op=(f"nchwc.{op}" if n.domain == "com.microsoft.nchwc" else op), type="eltwise",
                      in_bytes=sum(nb(t) for t in acts), w_bytes=sum(nb(t) for t in wts),
                      out_bytes=sum(nb(t) for t in n.output if t))
        x = shapes.get(ins[0]) if ins else None
        y = shapes.get(n.output[0]) if n.output else None
        if op in _ORT_CONV:
            w = shapes.get(ins[3] if op == "QLinearConv" else ins[1]) or []
            groups = int(_attr(n, "group", 1))
            ks = _attr(n, "kernel_shape") or w[2:] or [1]
            cin = (x[-1] if _channels_last(n) else x[1]) if x else 0
            kern.cin, kern.cout, kern.groups, kern.k = cin, (w[0] if w else 0), groups, int(max(ks))
            kern.macs = (_prod(y) * _prod(w[1:])) if (y and w) else 0.0
            if op == "ConvTranspose" and x and w:  # weight [cin, cout/group, k...]: every input pixel scatters
                kern.macs, kern.cout = _prod(x) * _prod(w[1:]), int(w[1]) * groups
            act = _attr(n, "activation")
            if act:
                kern.fused.append(str(act))
            if op in ("Conv", "FusedConv") and len(n.input) > 3 and n.input[3]:
                kern.fused.append("Add")
        elif op in _ORT_GEMM:
            bi = {"QGemm": 3, "QLinearMatMul": 3}.get(op, 1)
            b = shapes.get(ins[bi]) if len(ins) > bi else None
            if x and b:
                kk = x[-1]
                nout = b[0] if _attr(n, "transB", 0) else b[-1]
                kern.macs, kern.cin, kern.cout = _prod(x[:-1]) * kk * nout, int(kk), int(nout)
            if _attr(n, "activation"):
                kern.fused.append(str(_attr(n, "activation")))
        kern.type = ort_type(op, kern.k, kern.groups, kern.cin)
        out.append(kern)
    return tuple(out)


# ------------------------------------------------------------------------------------------- TFLite

_TFL_CONV = {"CONV_2D", "DEPTHWISE_CONV_2D", "CONV_3D", "TRANSPOSE_CONV"}
_TFL_GEMM = {"FULLY_CONNECTED", "BATCH_MATMUL"}
_TFL_POOL = {"MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN", "SUM", "REDUCE_MAX"}
_TFL_VIEW = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}
_TFL_MOVE = {"TRANSPOSE", "PAD", "PADV2", "CONCATENATION", "QUANTIZE", "DEQUANTIZE", "STRIDED_SLICE", "SLICE",
             "GATHER", "SPLIT", "RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR", "CAST", "TILE", "BROADCAST_TO"}


def tflite_kernels(tflite_path) -> list[Kernel]:
    """The operators the TFLite interpreter runs for ``tflite_path`` (XNNPACK delegate node not counted)."""
    return list(_tflite_kernels_cached(_stamp(tflite_path)))


@lru_cache(maxsize=256)
def _tflite_kernels_cached(stamp: tuple) -> tuple:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - the project depends on ai-edge-litert
        raise InputError("ai-edge-litert is not installed; run `pip install ai-edge-litert`") from None
    try:
        it = Interpreter(model_path=stamp[0], num_threads=1)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"cannot read TFLite file {stamp[0]} ({str(e).splitlines()[0]}); re-export it") from None
    td = {t["index"]: t for t in it.get_tensor_details()}
    out = []
    for o in it._get_ops_details():  # noqa: SLF001 - the interpreter's only listing of its operators
        op = o["op_name"]
        if op == "DELEGATE":
            continue
        ins = [td[i] for i in o["inputs"] if i >= 0 and i in td]
        outs = [td[i] for i in o["outputs"] if i >= 0 and i in td]

        def nb(t):
            return _prod(t["shape"]) * t["dtype"](0).itemsize

        # conv / fully-connected: input 0 is the activation, the others are filter and bias
        if op in _TFL_CONV or op in _TFL_GEMM:
            acts, wts = ins[:1], ins[1:]
        else:
            acts, wts = ins, []
        kern = Kernel(op=op, type="eltwise", in_bytes=sum(nb(t) for t in acts), w_bytes=sum(nb(t) for t in wts),
                      out_bytes=sum(nb(t) for t in outs))
        y = list(outs[0]["shape"]) if outs else []
        x = list(ins[0]["shape"]) if ins else []
        if op == "TRANSPOSE_CONV" and len(ins) > 2:  # inputs: output shape, filter [cout, kh, kw, cin], input
            w, xin = list(ins[1]["shape"]), list(ins[2]["shape"])
            kern.in_bytes, kern.w_bytes = nb(ins[2]), sum(nb(t) for t in ins[3:]) + nb(ins[1])
            kern.macs, kern.cin, kern.cout, kern.k = _prod(xin) * _prod(w[:3]), int(w[-1]), int(w[0]), int(max(w[1:3]))
            kern.type = conv_type(kern.k, 1, kern.cin)
        elif op in _TFL_CONV and len(ins) > 1:
            w = list(ins[1]["shape"])  # CONV_2D [cout, kh, kw, cin]; DEPTHWISE [1, kh, kw, cout]
            cin = int(x[-1]) if x else 0
            if op == "DEPTHWISE_CONV_2D":
                kern.macs = _prod(y) * _prod(w[1:3])
                kern.groups, kern.cout = cin, int(w[-1])
            else:
                kern.macs = _prod(y) * _prod(w[1:])
                kern.groups = max(cin // max(int(w[-1]), 1), 1)
                kern.cout = int(w[0])
            kern.cin, kern.k = cin, int(max(w[1:3]))
            kern.type = "dwconv" if op == "DEPTHWISE_CONV_2D" else conv_type(kern.k, kern.groups, cin)
        elif op in _TFL_GEMM and len(ins) > 1:
            w = list(ins[1]["shape"])
            kern.cin, kern.cout = int(w[-1]), int(w[0])
            kern.macs = _prod(y) * kern.cin
            kern.type = "gemm"
        elif op in _TFL_POOL:
            kern.type = "pool"
        elif op in _TFL_VIEW:
            kern.type = "view"
        elif op in _TFL_MOVE:
            kern.type = "move"
        out.append(kern)
    return tuple(out)


def kernels_for(path, runtime: str, dtype: str = "fp32") -> tuple[list[Kernel], str]:
    """(kernels, how they were found) for an artifact: a .tflite run by LiteRT, an .onnx by onnxruntime."""
    p = str(path)
    if p.endswith(".tflite"):
        return tflite_kernels(p), "operators of the .tflite file (LiteRT interpreter)"
    if runtime == "onnxruntime" and p.endswith(".onnx"):
        return ort_kernels(p), "onnxruntime's optimized graph (ORT_ENABLE_ALL, this CPU)"
    raise InputError(f"{p}: no {runtime} kernels to read (give the .tflite for TFLite, the .onnx for onnxruntime)")


def summary(kernels: list[Kernel]) -> dict:
    """{kernel type: count} plus the fused patterns seen, for reports and tests."""
    out: dict = {}
    for k in kernels:
        out[k.type] = out.get(k.type, 0) + 1
    fused = sorted({f"{k.op}+{'+'.join(k.fused)}" for k in kernels if k.fused})
    return {"types": out, "fused": fused, "n": len(kernels)}
