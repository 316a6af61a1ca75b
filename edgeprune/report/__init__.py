"""report.json (the documented, machine-readable record of a run) and report.html."""

from .build import SCHEMA_VERSION, build_report
from .html import render_html

__all__ = ["SCHEMA_VERSION", "build_report", "render_html"]
