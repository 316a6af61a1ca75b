"""A compacted two-output model (per-channel PReLU, channels-last flatten) exported to every format, each
output checked against torch in its runtime.

The pipeline's ``build`` takes one-output models only (see results_two_outputs.md); this script uses the
project's own converters (``export_onnx_fp32``, ``quantize_onnx_int8``, the TFLite worker's ``convert_fp32``
and ``convert_int8_pt2e``) on the compacted model and runs every artifact with all of its outputs:
onnxruntime and ai-edge-litert (TFLite outputs matched to torch's by shape, INT8 outputs dequantized).

    python benchmarks/surgery/two_outputs_export.py   # writes results_two_outputs.json
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks" / "zoo"))


def ort_outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return [np.concatenate(o) for o in zip(*[s.run(None, {name: x[i:i + 1]}) for i in range(len(x))])]


def tflite_outputs(path: Path, x: np.ndarray, want: list[np.ndarray]) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    inp, outs = it.get_input_details()[0], it.get_output_details()
    got = [[] for _ in outs]
    for i in range(len(x)):
        xi = x[i:i + 1]
        if np.dtype(inp["dtype"]) != np.float32:
            s, z = inp["quantization"]
            xi = np.clip(np.round(xi / s) + z, -128, 127).astype(inp["dtype"])
        it.set_tensor(inp["index"], xi)
        it.invoke()
        for k, o in enumerate(outs):
            y = it.get_tensor(o["index"]).copy()
            if np.dtype(o["dtype"]) != np.float32:
                s, z = o["quantization"]
                y = (y.astype(np.float32) - z) * s
            got[k].append(y)
    got = [np.concatenate(g) for g in got]
    ordered = []  # torch's order, matched by shape (the TFLite output order is the converter's)
    for w in want:
        k = next(k for k, g in enumerate(got) if g.shape == w.shape)
        ordered.append(got.pop(k))
    return ordered


def main() -> None:
    from reference import check_against_reference
    from surgery_pattern_models import PReLUTwoOutputsChannelsLast, randomize

    from edgeprune.data import load_dataset
    from edgeprune.export.onnx_export import export_onnx_fp32, quantize_onnx_int8
    from edgeprune.export.tflite_worker import convert_fp32, convert_int8_pt2e
    from edgeprune.surgery import analyze, compact, compact_and_verify, plan_from_scores

    ds = load_dataset("digits")
    x = ds.normalize(ds.x_test[:200]).astype(np.float32)
    calib = ds.normalize(ds.x_train[:128]).astype(np.float32)
    torch.manual_seed(0)
    model = randomize(PReLUTwoOutputsChannelsLast())
    ex = torch.from_numpy(x[:1])
    graph = analyze(model, ex)
    rng = np.random.default_rng(0)
    plan = plan_from_scores(graph, {g: rng.random(v.size) for g, v in graph.groups.items()},
                            {g: max(1, int(v.size * 0.7)) for g, v in graph.groups.items()})
    small, rep = compact_and_verify(model, plan, ex, torch.from_numpy(x), graph)
    chk = check_against_reference(model, lambda m, e: compact(m, plan, e, graph), ex, torch.from_numpy(x), small)
    with torch.no_grad():
        want = [t.numpy() for t in small(torch.from_numpy(x))]
    res = {"model": "PReLUTwoOutputsChannelsLast (tests/surgery_pattern_models.py)", "plan_keep": 0.7,
           "params": {"dense": sum(p.numel() for p in model.parameters()), "compact": rep["params"]},
           "compact_vs_masked_rel": rep["rel_diff"], "compact_vs_independent_reference_rel": chk["rel_diff"],
           "inputs": f"{len(x)} digits test images", "artifacts": {}}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        prog = d / "model.pt2"
        torch.export.save(torch.export.export(small.eval(), (ex,)), prog)
        steps = {
            "onnx": lambda: export_onnx_fp32(small, ex, d / "m.onnx"),
            "onnx-int8": lambda: quantize_onnx_int8(d / "m.onnx", d / "m_int8.onnx", calib, d),
            "tflite": lambda: convert_fp32(str(prog), ex, str(d / "m.tflite")),
            "tflite-int8": lambda: convert_int8_pt2e(str(prog), ex, calib, str(d / "m_int8.tflite")),
        }
        files = {"onnx": "m.onnx", "onnx-int8": "m_int8.onnx", "tflite": "m.tflite", "tflite-int8": "m_int8.tflite"}
        for fmt, step in steps.items():
            t0 = time.perf_counter()
            try:
                step()
                path = d / files[fmt]
                got = ort_outputs(path, x) if fmt.startswith("onnx") else tflite_outputs(path, x, want)
                outs = []
                for w, g in zip(want, got):
                    diff = float(np.abs(w.astype(np.float64) - g).max())
                    outs.append({"shape": list(w.shape), "max_abs_diff": diff, "rel_diff": diff / float(np.abs(w).max()),
                                 "argmax_agreement": float((w.argmax(1) == g.argmax(1)).mean())})
                res["artifacts"][fmt] = {"ok": True, "n_outputs": len(got), "outputs": outs,
                                         "seconds": time.perf_counter() - t0}
            except Exception as e:  # noqa: BLE001 - recorded
                res["artifacts"][fmt] = {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            print(fmt, json.dumps(res["artifacts"][fmt]), flush=True)
    res.update(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), loadavg=os.getloadavg(),
               machine=f"{platform.machine()} {os.cpu_count()} cores (shared)",
               git=subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                  cwd=HERE).stdout.strip(),
               command="python benchmarks/surgery/two_outputs_export.py")
    (HERE / "results_two_outputs.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
