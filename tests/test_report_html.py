"""report.html renders offline in headless Chromium with no console errors and no network."""

import re
import shutil
import subprocess

import pytest


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_is_self_contained(built):
    run, _ = built
    html = (run / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "report loads something from the network"
    assert html.count("<svg") >= 4, "the plots are missing"
    for needle in ("PASSES", "Budget", "Artifacts", "measured on this machine", "predicted by"):
        assert needle in html


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`; .ci/run installs it)")
def test_report_renders_in_headless_chromium(built, tmp_path):
    run, _ = built
    shot = tmp_path / "report.png"
    p = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--window-size=1200,2400", f"--screenshot={shot}", (run / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 20_000  # a real page, not a blank one
    console = [line for line in p.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", (run / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    assert "edgeprune report" in dom.stdout and "tflite-int8" in dom.stdout
