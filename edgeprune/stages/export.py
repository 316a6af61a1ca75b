"""Stage 5: export the final model to the target's formats, each checked in its real runtime."""

from __future__ import annotations

import torch

from ..models import example_for
from ..runfolder import write_json
from .common import load_model

name = "export"
summary_file = "export.json"
EXPORT_DIR = "export"


def formats(b) -> list[str]:
    from ..export import FORMATS

    wanted = b.cfg["export"]["formats"] or list(b.target.artifacts)
    return [f for f in FORMATS if f in wanted]


def depends(b):
    e = b.cfg["export"]
    return [formats(b), e["calib_samples"], e["int8_tolerance"], b.target.onnx_opset]


def describe(b):
    return ", ".join(formats(b))


def run(b) -> list[str]:
    from ..export import export_all

    model, _, arch = load_model(b, "model.pt")
    a = b.arrays
    out_dir = b.run / EXPORT_DIR
    results = export_all(
        model, example_for(arch),
        calib=a["x_train"][: b.cfg["export"]["calib_samples"]],
        test_x=a["x_test"], test_y=a["y_test"], out_dir=out_dir, formats=formats(b), task=b.task,
        opset=b.target.onnx_opset, int8_tolerance=b.cfg["export"]["int8_tolerance"],
        progress=lambda msg: b.ui.log(f"  {msg}"),
    )
    failed = [f for f, r in results.items() if not r.get("ok")]
    summary = {"artifacts": results, "complete": not failed, "failed": failed, "dir": EXPORT_DIR}
    for f, r in results.items():
        if r.get("ok"):
            b.ui.log(f"  {f:12s} {r['size_bytes'] / 1024:8.1f} KiB  {r['metric_name']} {r['metric']:.2f} "
                     f"(torch {r['torch_metric']:.2f})  max|diff| {r['max_abs_diff']:.2e}")
        else:
            b.ui.warn(f"{f} export failed: {r.get('error')}")
    write_json(b.run / summary_file, summary)
    b.outcome[name] = summary
    files = [f"{EXPORT_DIR}/{r['path']}" for r in results.values() if r.get("ok")]
    return files + [summary_file]
