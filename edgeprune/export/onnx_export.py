"""ONNX fp32 export (torch dynamo exporter + onnxsim) and ONNX Runtime static INT8 (QDQ, per runtime).

Both functions write to the path they are given (a scratch path: the caller publishes
atomically) and return a small dict of facts for the artifact entry.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import warnings
from pathlib import Path

import numpy as np

#: The lowest opset the torch.export-based exporter emits natively. Lower opsets (older
#: TensorRT on JetPack 5 tops out at 17) use the legacy TorchScript exporter instead,
#: because the ONNX version converter cannot downgrade the dynamo graphs.
DYNAMO_MIN_OPSET = 18
DEFAULT_OPSET = 18


def _quiet():
    """Silence the exporters' progress prints and warnings (they go to stdout/stderr)."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir"):
        lg = logging.getLogger(name)
        prev = lg.level
        lg.setLevel(logging.ERROR)
        stack.callback(lg.setLevel, prev)
    return stack


#: Name of the batch axis in a dynamic-batch ONNX model's input and output.
BATCH_DIM = "batch"


def export_onnx_fp32(model, example_input, dst: Path, opset: int | None = None, dynamic_batch: bool = False) -> dict:
    """Export ``model`` (eval mode), simplify with onnxsim, check and save to ``dst`` (one file).

    The batch axis is fixed to the example's (batch 1) unless ``dynamic_batch``: then the
    first axis of the input and output is the symbolic dimension :data:`BATCH_DIM`.
    A model with several outputs gets them named ``output_0 .. output_{N-1}`` in its tuple's order
    (one output keeps the exporter's name).
    Returns ``{"opset": int, "exporter": str, "batch": 1 | "batch", "input_name": str, "output_names": [...],
    "notes": [...]}``.
    """
    import onnx
    import torch

    from ..models import output_list
    from .parity import output_names

    with torch.no_grad():
        n_out = len(output_list(model(example_input)))
    names = ["output"] if n_out == 1 else output_names(n_out)

    opset = DEFAULT_OPSET if opset is None else int(opset)
    notes: list[str] = []
    raw = dst.with_name(dst.name + ".raw.onnx")
    wanted = BATCH_DIM if dynamic_batch else int(example_input.shape[0])
    if dynamic_batch:  # torch.export specializes a size-1 axis to a constant: trace with batch 2
        example_input = torch.cat([example_input, example_input])
    with _quiet(), torch.no_grad():
        if opset >= DYNAMO_MIN_OPSET:
            exporter = "torch.onnx dynamo"
            dyn = {"dynamic_shapes": ({0: torch.export.Dim(BATCH_DIM, min=1)},)} if dynamic_batch else {}
            torch.onnx.export(model, (example_input,), str(raw), dynamo=True, external_data=False,
                              opset_version=opset, verbose=False, **dyn)  # fmt: skip
        else:
            exporter = "torch.onnx torchscript"
            notes.append(f"opset {opset} is below the dynamo exporter's minimum {DYNAMO_MIN_OPSET}: used the legacy exporter")
            axes = {"input": {0: BATCH_DIM}, **{n: {0: BATCH_DIM} for n in names}} if dynamic_batch else None
            torch.onnx.export(model, (example_input,), str(raw), dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=names, dynamic_axes=axes)  # fmt: skip
    proto = onnx.load(str(raw))
    got = _default_opset(proto)
    if got != opset:
        raise RuntimeError(f"exporter produced opset {got}, asked for {opset}")
    try:
        import onnxsim

        with _quiet():
            simplified, check = onnxsim.simplify(proto)
        if check:
            proto = simplified
        else:
            notes.append("onnxsim check failed: kept the unsimplified graph")
    except Exception as exc:  # onnxsim is an optimisation, never a reason to fail
        notes.append(f"onnxsim failed ({type(exc).__name__}): kept the unsimplified graph")
    if n_out > 1:
        _rename_outputs(proto, names)
    onnx.checker.check_model(proto)
    batch = _batch_dim(proto)
    if batch != wanted:
        raise RuntimeError(f"exported input batch axis is {batch!r}, expected {wanted!r}")
    onnx.save(proto, str(dst))
    raw.unlink(missing_ok=True)
    return {"opset": got, "exporter": exporter, "batch": batch, "input_name": proto.graph.input[0].name,
            "output_names": [o.name for o in proto.graph.output], "notes": notes}


def _rename_outputs(proto, names: list[str]) -> None:
    """Give the graph's outputs ``names`` (in order), renaming every use of the old names."""
    if len(proto.graph.output) != len(names):
        raise RuntimeError(f"exported graph has {len(proto.graph.output)} outputs, the model {len(names)}")
    old = {o.name: n for o, n in zip(proto.graph.output, names) if o.name != n}
    taken = {v for node in proto.graph.node for v in node.output} | {i.name for i in proto.graph.input}
    clash = (taken - set(old)) & set(names)
    if clash:
        raise RuntimeError(f"cannot name the outputs {names}: {sorted(clash)} already names another tensor")
    for node in proto.graph.node:
        for i, v in enumerate(node.output):
            if v in old:
                node.output[i] = old[v]
        for i, v in enumerate(node.input):
            if v in old:
                node.input[i] = old[v]
    for o in proto.graph.output:
        o.name = old.get(o.name, o.name)


def _batch_dim(proto):
    """The first axis of the graph's first input: an int, or the symbolic name."""
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") else dim.dim_param


def _default_opset(proto) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return -1


#: INT8 schemes for onnxruntime's quantizer, chosen by the runtime that will run the model.
#: Measured on the x86 host (``benchmarks/export/int8_variants.md``): with uint8 activations
#: (U8S8) onnxruntime's CPU provider fuses every QDQ Conv into QLinearConv and runs at ~0.5x
#: the fp32 latency; with symmetric int8 activations (S8S8) most Convs stay float between
#: DequantizeLinear/QuantizeLinear pairs and INT8 is ~1.4x SLOWER than fp32 (QOperator S8S8:
#: ~5x). TensorRT's explicit quantization needs symmetric int8 activations (zero point 0).
INT8_SCHEMES = {
    "onnxruntime": {
        "format": "QDQ", "activation": "uint8 asymmetric", "weights": "int8 symmetric per-channel",
        "why": "onnxruntime CPU kernels: U8S8 QDQ fuses every Conv into QLinearConv (x86 VNNI/AVX2 u8s8 GEMM, "
               "ARM NEON/dot-product); S8S8 left Convs unfused and ran slower than fp32 on the host",
    },
    "tensorrt": {
        "format": "QDQ", "activation": "int8 symmetric", "weights": "int8 symmetric per-channel",
        "why": "TensorRT explicit quantization accepts only symmetric int8 Q/DQ (zero point 0)",
    },
}  # fmt: skip


def cpu_flags() -> set[str]:
    """This machine's /proc/cpuinfo flags (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


#: CPU flags of x86 int8 dot-product instructions that accumulate without the u8s8 vpmaddubsw saturation
VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


def host_x86_without_vnni() -> bool:
    """Whether this machine is an x86 CPU without VNNI (its onnxruntime int8 kernels can saturate)."""
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686") and not (cpu_flags() & VNNI_FLAGS)


def reduce_range_for(runtime: str, target_x86: bool) -> tuple[bool, str]:
    """Whether to quantize weights to 7 bits, and why: onnxruntime's advice for x86 without VNNI, which applies to
    the target (an x86 one) and also to this machine, which runs every artifact against torch on test data."""
    if host_x86_without_vnni():
        if runtime == "onnxruntime" and target_x86:
            return True, "7-bit weights (reduce_range): the host x86 CPU lacks VNNI, u8s8 vpmaddubsw can saturate"
        return True, ("7-bit weights (reduce_range): the x86 CPU that checks this artifact against torch lacks VNNI; "
                      "with 8-bit weights its int8 kernels saturate (4-25 accuracy points lost on the digits test "
                      "models), so the check would not say how the artifact does on the target")
    if runtime != "onnxruntime":
        return False, "8-bit weights: TensorRT does not saturate"
    if not target_x86:
        return False, "8-bit weights: ARM int8 kernels do not saturate (no vpmaddubsw)"
    return False, "8-bit weights: the host CPU has VNNI (no u8s8 vpmaddubsw saturation)"


def quantize_onnx_int8(fp32_path: Path, dst: Path, calib: np.ndarray, scratch: Path, runtime: str = "onnxruntime",
                       target_x86: bool = False) -> dict:  # fmt: skip
    """Static INT8 for ``runtime`` (:data:`INT8_SCHEMES`): ``quant_pre_process`` then QDQ,
    per-channel int8 weights, MinMax calibration over ``calib``. For onnxruntime activations
    are uint8 asymmetric (the fast U8S8 kernels); for TensorRT int8 symmetric (zero point 0),
    which its explicit-quantization path needs. ``reduce_range`` where an x86 CPU without VNNI
    runs the artifact: the target, or this machine, which checks it (see :func:`reduce_range_for`).
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if runtime not in INT8_SCHEMES:
        raise ValueError(f"unknown INT8 runtime {runtime!r}; choose from {sorted(INT8_SCHEMES)}")
    if len(calib) == 0:
        raise ValueError("no calibration samples")
    pre = scratch / "model.preproc.onnx"
    with _quiet():
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
    proto = onnx.load(str(pre))
    inp = proto.graph.input[0]
    dim0 = inp.type.tensor_type.shape.dim[0]
    batch = dim0.dim_value if dim0.HasField("dim_value") and dim0.dim_value > 0 else 1
    if len(calib) < batch:
        raise ValueError(f"{len(calib)} calibration samples, fewer than the model batch {batch}")

    n_feeds = len(calib) // batch
    # Ranges are merged stride by stride (bounded memory: ORT otherwise keeps every
    # intermediate output of every sample). Its CalibMaxIntermediateOutputs option would
    # silently DROP the collected data each time the limit is hit, so it is not used.
    stride = min(64, n_feeds)
    padded = -(-n_feeds // stride) * stride  # ORT wants len() divisible by the stride

    class _Reader(CalibrationDataReader):
        """Real calibration samples, one feed of the model's fixed batch at a time."""

        def __init__(self):
            self.i, self.end = 0, n_feeds

        def get_next(self):
            if self.i >= self.end:
                return None
            x = calib[self.i * batch : (self.i + 1) * batch]
            self.i += 1
            return {inp.name: np.ascontiguousarray(x, dtype=np.float32)}

        def __len__(self):
            return padded

        def set_range(self, start_index: int, end_index: int):
            self.i, self.end = start_index, min(end_index, n_feeds)

        def rewind(self):
            self.i, self.end = 0, n_feeds

    symmetric = runtime == "tensorrt"
    reduce_range, rr_why = reduce_range_for(runtime, target_x86)
    reader = _Reader()
    with _quiet():
        quantize_static(
            str(pre),
            str(dst),
            calibration_data_reader=reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": symmetric, "CalibStridedMinMax": stride},
        )
    pre.unlink(missing_ok=True)
    scheme = INT8_SCHEMES[runtime]
    act = "symmetric int8" if symmetric else "asymmetric uint8"
    return {
        "quantizer": f"onnxruntime static QDQ, per-channel int8 weights, {act} activations, MinMax",
        "calib_samples": int(n_feeds * batch),
        "int8_scheme": {"runtime": runtime, **scheme, "reduce_range": reduce_range, "reduce_range_why": rr_why},
    }


def onnx_int8_stats(path: Path) -> dict:
    """Counts that prove a QDQ graph is integer: Q/DQ nodes and int8 initializers."""
    import onnx

    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    int8 = sum(1 for t in proto.graph.initializer if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8))
    return {
        "quantize_linear": ops.count("QuantizeLinear"),
        "dequantize_linear": ops.count("DequantizeLinear"),
        "int8_initializers": int8,
    }
