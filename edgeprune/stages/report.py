"""Stage 8: report.json (documented schema) and a self-contained report.html."""

from __future__ import annotations

from ..report import build_report, render_html
from ..runfolder import atomic_write_text, write_json

name = "report"
summary_file = "report.json"


def depends(b):
    from .bench import target_fingerprint

    return [target_fingerprint(b.target)]


def describe(b):
    return "report.json, report.html"


def run(b) -> list[str]:
    report = build_report(b.run.path, b.target)
    files, extra = [], ""
    if b.task == "reconstruction":
        files, extra = _reconstructions(b, report)
    write_json(b.run / summary_file, report)
    atomic_write_text(b.run / "report.html", render_html(report, extra_html=extra))
    b.outcome[name] = {"path": str(b.run / "report.html")}
    b.ui.log(f"  open {b.run / 'report.html'}")
    return [summary_file, "report.html", *files]


def _reconstructions(b, report) -> tuple[list[str], str]:
    """Reconstruction runs: test images, the dense model's and the deployed compact model's outputs (PNG grid)."""
    from ..report.images import GRID_FILE, inline_png, write_reconstructions
    from .common import load_model

    dense, _, _ = load_model(b, "dense.pt")
    final, _, _ = load_model(b, "model.pt")
    m = report["model"]
    method = (report.get("method") or {}).get("method") or "compact"
    scores = {"dense": m["dense"].get("test_metric"), method: m["compact"].get("test_metric")}
    write_reconstructions(b.run.path, b.arrays["x_test"], {"dense": dense.eval(), method: final.eval()},
                          scores={k: v for k, v in scores.items() if v is not None})
    report["reconstructions"] = GRID_FILE
    return [GRID_FILE], inline_png(b.run / GRID_FILE, caption=f"test images: original, dense, {method} "
                                                             f"({report['metric_name']} on the whole test split)")
