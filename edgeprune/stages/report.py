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
    write_json(b.run / summary_file, report)
    atomic_write_text(b.run / "report.html", render_html(report))
    b.outcome[name] = {"path": str(b.run / "report.html")}
    b.ui.log(f"  open {b.run / 'report.html'}")
    return [summary_file, "report.html"]
