"""Stage 5: export the final model to the target's formats, each checked in its real runtime."""

from __future__ import annotations

from ..models import example_for
from ..runfolder import write_json
from .common import load_model

name = "export"
summary_file = "export.json"
EXPORT_DIR = "export"
DYNAMIC_FAILED = "onnx-dynamic-batch"  # the name ``failed`` gives a failed model.dynamic.onnx


def formats(b) -> list[str]:
    from ..export import FORMATS

    wanted = b.cfg["export"]["formats"] or list(b.target.artifacts)
    return [f for f in FORMATS if f in wanted]


def dynamic_batch(b) -> bool:
    """``export.dynamic_batch``: also write ``model.dynamic.onnx`` (False when the key is absent)."""
    return bool(b.cfg["export"].get("dynamic_batch", False))


def int8_runtime(b) -> str:
    """What runs model.int8.onnx: TensorRT on Jetson (symmetric int8), onnxruntime elsewhere (uint8 activations)."""
    return "tensorrt" if b.target.platform == "jetson" else "onnxruntime"


def depends(b):
    e = b.cfg["export"]
    deps = [formats(b), e["calib_samples"], e["int8_tolerance"], b.target.onnx_opset, b.metric_name, int8_runtime(b)]
    return deps + ["dynamic_batch"] if dynamic_batch(b) else deps  # unchanged fingerprint when off


def describe(b):
    return ", ".join(formats(b)) + (" (+ dynamic-batch ONNX)" if dynamic_batch(b) else "")


def run(b) -> list[str]:
    from ..export import export_all
    from ..export.core import int8_over_tolerance

    model, _, arch = load_model(b, "model.pt")
    a = b.arrays
    out_dir = b.run / EXPORT_DIR
    tolerance = b.cfg["export"]["int8_tolerance"]
    results = export_all(
        model, example_for(arch),
        calib=a["x_train"][: b.cfg["export"]["calib_samples"]],
        test_x=a["x_test"], test_y=a["y_test"], out_dir=out_dir, formats=formats(b), task=b.task,
        opset=b.target.onnx_opset, int8_tolerance=tolerance, dynamic_batch=dynamic_batch(b), metric=b.metric_name,
        progress=lambda msg: b.ui.log(f"  {msg}"), int8_runtime=int8_runtime(b), threads=b.target.threads,
        target_x86=b.target.platform == "other",
    )  # fmt: skip
    failed = [f for f, r in results.items() if not r.get("ok")]
    dyn = (results.get("onnx") or {}).get("dynamic_batch")
    if dyn and not dyn["ok"]:
        failed.append(DYNAMIC_FAILED)
    over = int8_over_tolerance(results, tolerance)
    summary = {"artifacts": results, "complete": not failed, "failed": failed, "int8_over_tolerance": over,
               "int8_tolerance": tolerance, "dir": EXPORT_DIR}  # fmt: skip
    for f, r in results.items():
        if r.get("ok"):
            b.ui.log(f"  {f:12s} {r['size_bytes'] / 1024:8.1f} KiB  {r['metric_name']} {r['metric']:.2f} "
                     f"(torch {r['torch_metric']:.2f})  max|diff| {r['max_abs_diff']:.2e}")
        else:
            b.ui.warn(f"{f} export failed: {r.get('error')}")
    for o in over:
        b.ui.warn(f"{o['format']} loses {o['metric_drop']:.3g} {o['metric_name']} (its own units) vs torch "
                  f"({o['metric']:.2f} vs {o['torch_metric']:.2f}), over the INT8 tolerance of {o['tolerance']:g}: "
                  "more calibration samples (export.calib_samples) or an fp32 artifact may fix it")
    files = [f"{EXPORT_DIR}/{r['path']}" for r in results.values() if r.get("ok")]
    if dyn and dyn["ok"]:
        files.append(f"{EXPORT_DIR}/{dyn['path']}")
    elif dyn:
        b.ui.warn(dyn["error"])
    write_json(b.run / summary_file, summary)
    b.outcome[name] = summary
    return files + [summary_file]
