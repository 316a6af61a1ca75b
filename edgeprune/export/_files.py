"""Atomic file handling for the export stage.

Every artifact is produced under a temporary name inside the destination directory and
moved to its final name with :func:`os.replace` (atomic on one filesystem), so a killed
export never leaves a half-written model under a final name. Temporary names start with
:data:`TMP_PREFIX`; :func:`remove_stale_tmp` clears what a killed run left behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..runfolder import TMP_PREFIX, _umask, atomic_write_text, write_json
from ..runfolder import file_sha256 as sha256  # noqa: F401  (one implementation)


def make_tmp_dir(parent: Path) -> Path:
    """A private scratch directory inside ``parent`` (same filesystem, so renames are atomic)."""
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=parent))
    path.chmod(0o755 & ~_umask())  # mkdtemp makes 0700; a bundle renamed from it must be readable
    return path


def remove_stale_tmp(parent: Path) -> None:
    """Remove scratch files/directories a previous (killed) export left in ``parent``."""
    if not parent.is_dir():
        return
    for p in parent.iterdir():
        if p.name.startswith(TMP_PREFIX):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def publish(src: Path, dst: Path) -> None:
    """Move a finished file from scratch to its final name atomically (fsync first)."""
    with open(src, "rb") as f:
        os.fsync(f.fileno())
    src.chmod(0o644 & ~_umask())
    os.replace(src, dst)


# one implementation of atomic writes for the whole package
write_text_atomic = atomic_write_text
write_json_atomic = write_json


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """A single-line, length-limited reason for an error entry (ANSI colour codes removed)."""
    import re

    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[0] if lines else (type(exc).__name__ if not isinstance(exc, str) else "unknown error")
    return line if len(line) <= limit else line[: limit - 3] + "..."
