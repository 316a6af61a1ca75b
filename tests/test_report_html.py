"""report.html renders offline in headless Chromium with no console errors and no network request;
report.json has every key docs/report-schema.md documents."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgeprune.report.html import _ms, _sig

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCHEMA_DOC = Path(__file__).resolve().parents[1] / "docs" / "report-schema.md"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         '--host-resolver-rules=MAP * ~NOTFOUND']


def test_report_is_self_contained(built):
    run, _ = built
    html = (run / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "report loads something from the network"
    assert html.count("<svg") >= 4, "the plots are missing"
    for needle in ("PASSES", "Budget", "Artifacts", "measured on this machine", "predicted by", "Uncertainty:",
                   "Cost model", "calibrated on", "leave-one-model-out", "rpi4 p90 (pred.)", "µs"):
        assert needle in html, needle
    assert "Conv2d 3x3 [0.0]" in html  # readable layer names on the widths plot


def _page_requests(netlog: Path) -> list:
    """URLs the PAGE asked for (its network isolation key is the file:// page), excluding file: and data:."""
    d = json.loads(netlog.read_text())
    start = d["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    out = []
    for e in d["events"]:
        p = e.get("params") or {}
        if e["type"] == start and str(p.get("network_isolation_key", "")).startswith("file://"):
            if not str(p.get("url", "")).startswith(("file:", "data:")):
                out.append(p["url"])
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`; .ci/run installs it)")
def test_report_renders_in_headless_chromium(built, tmp_path):
    run, _ = built
    shot, netlog = tmp_path / "report.png", tmp_path / "net.json"
    p = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         f"--log-net-log={netlog}", "--window-size=1200,2400", f"--screenshot={shot}", (run / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 20_000  # a real page, not a blank one
    console = [line for line in p.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    assert netlog.is_file() and _page_requests(netlog) == [], "the report requested something over the network"
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", (run / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    assert "edgeprune report" in dom.stdout and "tflite-int8" in dom.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_network_check_catches_a_request(tmp_path):
    """The net-log check really sees a page's request (blocked by the resolver rule, but attempted)."""
    page = tmp_path / "p.html"
    page.write_text('<!doctype html><html><body><img src="http://example.com/x.png"></body></html>')
    netlog = tmp_path / "net.json"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--log-net-log={netlog}",
                    f"--screenshot={tmp_path / 's.png'}", page.as_uri()], capture_output=True, timeout=120)
    assert _page_requests(netlog) == ["http://example.com/x.png"]


def test_report_json_has_every_documented_key(built):
    run, _ = built
    report = json.loads((run / "report.json").read_text())
    doc = SCHEMA_DOC.read_text()
    first_cells = re.findall(r"^\| (`[^|]+`) \|", doc, flags=re.M)
    top = {k.strip("` ").split(".")[0].split("[")[0] for cell in first_cells for k in cell.split(", ")}
    assert {"schema", "artifacts", "budget", "cost_model", "model", "sibling_runs"} <= top
    missing = top - set(report)
    assert not missing, f"documented but absent from report.json: {missing}"
    lat = report["artifacts"][0]["latency"]
    for block, fields in (("host", ("p50_ms", "p90_ms", "model_footprint_mb", "runtime_footprint_mb")),
                          ("predicted", ("latency_ms", "p90_ms", "peak_memory_mb", "peak_memory_how", "uncertainty"))):
        for f in fields:
            assert f in lat[block], (block, f)
            assert f in doc, f"{block}.{f} is not documented"
    for line in report["budget"]["lines"]:
        assert {"name", "budget", "value", "source", "passed", "margin", "advice"} <= set(line)
    assert "`where`" in doc and "`model_footprint_mb`" in doc


def test_number_formatting():
    assert _ms(0.00412) == "4.12 µs" and _ms(0.0994) == "99.4 µs" and _ms(1.2345) == "1.23 ms"
    assert _ms(12.34) == "12.3 ms" and _ms(None) == "—"
    assert _sig(0.000123) == "0.000123" and _sig(1234.4) == "1230" and _sig(2.5e7) == "2.50e+07"
    assert _sig(98.333) == "98.3" and _sig(0) == "0" and _sig(9.9995) == "10.0"
