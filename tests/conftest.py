import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None, timeout=900):
    """Run the real `edgeprune` console entry point in a subprocess; return CompletedProcess."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # the subprocess imports this checkout's edgeprune even when run from another directory
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "edgeprune.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """`edgeprune build --target rpi4` on the embedded default (digits + cnn), through the CLI,
    exactly as the quickstart runs it: default (relative) output folder, from the working directory."""
    cwd = tmp_path_factory.mktemp("work")
    p = run_cli("build", "--target", "rpi4", cwd=cwd)
    assert p.returncode == 0, p.stderr[-3000:]
    return cwd / "runs" / "rpi4-cnn-l1", p
