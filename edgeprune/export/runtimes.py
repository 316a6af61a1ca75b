"""Run exported artifacts in their real runtimes (torch-free).

:class:`OrtRunner` wraps an ``onnxruntime.InferenceSession`` and :class:`TfliteRunner` an
``ai_edge_litert`` ``Interpreter``. Both take float32 batches shaped like the model input
(``(N, *input_shape[1:])``), feed them one sample at a time when the artifact has a fixed
batch of 1, and return float32 outputs ``(N, *output_shape[1:])``: ``run`` the first (the task
output), ``run_all`` every output in the model's order (``output_0 .. output_{N-1}``); the TFLite runner
quantizes int8 inputs and dequantizes int8 outputs with the tensor's own scale/zero point,
exactly as a device would.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np


def runtime_version(kind: str) -> str:
    """``"onnxruntime 1.31.1"`` or ``"ai-edge-litert 2.3.0"`` (the runtime that ran the parity check)."""
    from importlib import metadata

    dist = {"onnx": "onnxruntime", "tflite": "ai-edge-litert"}[kind]
    try:
        return f"{dist} {metadata.version(dist)}"
    except metadata.PackageNotFoundError:  # pragma: no cover - only in odd installs
        return dist


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype=np.int8) -> np.ndarray:
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


@contextlib.contextmanager
def _quiet_native_stderr():
    """Send file descriptor 2 to /dev/null for a moment (native INFO lines bypass sys.stderr)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class OrtRunner:
    def __init__(self, path: Path | str, threads: int | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()
        if len(inp) != 1:
            raise ValueError(f"expected one model input, found {len(inp)}")
        self.input_name = inp[0].name
        self.input_shape = list(inp[0].shape)
        self.fixed_batch = self.input_shape[0] if isinstance(self.input_shape[0], int) else None
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run_batch_all(self, x: np.ndarray) -> list[np.ndarray]:
        """One ``session.run`` on the whole batch ``x`` (a dynamic-batch model takes any size); every output."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        return self.run_batch_all(x)[0]

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output for ``x``: fed in the model's fixed batch, or in chunks of 256 when the batch is dynamic."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        step = self.fixed_batch or 256
        chunks = [self.session.run(None, {self.input_name: x[i : i + step]}) for i in range(0, len(x), step)]
        return [np.concatenate([c[k] for c in chunks], axis=0).astype(np.float32, copy=False)
                for k in range(len(self.output_names))]

    def run(self, x: np.ndarray) -> np.ndarray:
        """The first (task) output for ``x``."""
        return self.run_all(x)[0]


class TfliteRunner:
    def __init__(self, path: Path | str, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        with _quiet_native_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        ins, outs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(ins) != 1 or not outs:
            raise ValueError(f"expected one input and at least one output, found {len(ins)} and {len(outs)}")
        self.inp, self.outs = ins[0], _signature_order(self.interpreter, outs)
        self.out = self.outs[0]  # the task output
        self.input_shape = [int(d) for d in self.inp["shape"]]

    @property
    def input_dtype(self):
        return np.dtype(self.inp["dtype"])

    @property
    def quant(self) -> dict | None:
        """Input/output scale and zero point when the I/O is integer, else None."""
        if self.input_dtype == np.float32 and np.dtype(self.out["dtype"]) == np.float32:
            return None
        (s_in, z_in), (s_out, z_out) = self.inp["quantization"], self.out["quantization"]
        q = {
            "input_scale": float(s_in),
            "input_zero_point": int(z_in),
            "output_scale": float(s_out),
            "output_zero_point": int(z_out),
        }
        if len(self.outs) > 1:  # every output's own scale and zero point, in the model's order
            q["outputs"] = [{"scale": float(o["quantization"][0]), "zero_point": int(o["quantization"][1])}
                            if np.dtype(o["dtype"]) != np.float32 else None for o in self.outs]
        return q

    def tensor_dtypes(self) -> dict[str, str]:
        """Every tensor's name -> numpy dtype name (used to prove an artifact is fully integer)."""
        return {t["name"]: np.dtype(t["dtype"]).name for t in self.interpreter.get_tensor_details()}

    def run(self, x: np.ndarray) -> np.ndarray:
        """The first (task) output for ``x``."""
        return self.run_all(x)[0]

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output for ``x`` (in the model's order), int8 outputs dequantized."""
        it, inp = self.interpreter, self.inp
        x = np.asarray(x, dtype=np.float32)
        if list(x.shape[1:]) != self.input_shape[1:]:
            raise ValueError(f"input shape {list(x.shape[1:])} does not match the artifact's {self.input_shape}")
        in_dtype = np.dtype(inp["dtype"])
        if in_dtype != np.float32:
            s, z = inp["quantization"]
            x = quantize(x, s, z, in_dtype)
        results: list[list[np.ndarray]] = [[] for _ in self.outs]
        for i in range(len(x)):
            it.set_tensor(inp["index"], x[i : i + 1])
            it.invoke()
            for r, out in zip(results, self.outs):
                r.append(it.get_tensor(out["index"]).copy())
        ys = []
        for r, out in zip(results, self.outs):
            y = np.concatenate(r, axis=0)
            if np.dtype(out["dtype"]) != np.float32:
                s, z = out["quantization"]
                y = dequantize(y, s, z)
            ys.append(y.astype(np.float32, copy=False))
        return ys


def _signature_order(interpreter, outs: list[dict]) -> list[dict]:
    """The output details in the model's order: litert-torch names the signature outputs ``output_0 ..
    output_{N-1}`` (the order of the torch model's tuple), which ``get_output_details`` need not follow."""
    import re

    try:
        sigs = interpreter._get_full_signature_list()  # {name: {"inputs": {..}, "outputs": {name: tensor index}}}
    except Exception:  # noqa: BLE001 - an interpreter without signatures: keep the subgraph's order
        return list(outs)
    if len(outs) == 1 or len(sigs) != 1:
        return list(outs)
    named = next(iter(sigs.values())).get("outputs", {})
    keys = [re.fullmatch(r"output_(\d+)", k) for k in named]
    if len(named) != len(outs) or not all(keys):
        return list(outs)
    by_index = {o["index"]: o for o in outs}
    order = sorted(named, key=lambda k: int(k.rpartition("_")[2]))
    return [by_index[named[k]] for k in order] if all(named[k] in by_index for k in order) else list(outs)
