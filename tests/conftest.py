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


@pytest.fixture
def cli():
    return run_cli
