"""The run folder: one directory per build, one artifact (or sub-folder) per stage.

Every file is written to a temporary name in the same directory and renamed into place,
so an interrupted stage never leaves a half-written artifact that a resumed build would
trust. Each finished stage records itself in ``stages.json`` together with the files it
produced and their sizes; a stage is "complete" only if that record exists and all its
files are still there with those sizes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


TMP_PREFIX = ".edgeprune-tmp-"  # every temporary name starts so; a resumed stage clears leftovers


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_digest(root: Path) -> str:
    """sha256 over (relative path, size, mtime) of every file under ``root``: cheap for big image
    folders, and it changes whenever a file is added, removed, resized or rewritten."""
    h = hashlib.sha256()
    for p in sorted(q for q in Path(root).rglob("*") if q.is_file()):
        st = p.stat()
        h.update(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def source_digest(spec: str) -> str | None:
    """What a stage fingerprint records of a user input named by ``spec``, so that new contents
    under the same name rerun the stage: sha256 of a file's bytes, :func:`folder_digest` of a
    directory, sha256 of the ``.py`` file of ``file.py:function``. None for registered names and
    ``package.module:function`` specs (installed code: its name is its identity)."""
    if not spec:
        return None
    target = spec.rpartition(":")[0] if ":" in spec and not Path(spec).exists() else spec
    p = Path(target)
    if p.is_dir():
        return "dir:" + folder_digest(p)
    if p.is_file():
        return "sha256:" + file_sha256(p)
    return "missing" if target.endswith((".py", ".pt", ".pth", ".npz")) else None


class RunFolder:
    STAGES_FILE = "stages.json"

    def __init__(self, path: Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def _stages(self) -> dict:
        f = self.path / self.STAGES_FILE
        if not f.exists():
            return {}
        try:
            return read_json(f)
        except (OSError, json.JSONDecodeError):
            return {}

    def is_complete(self, stage: str, fingerprint: str | None = None) -> bool:
        rec = self._stages().get(stage)
        if not rec:
            return False
        if fingerprint is not None and rec.get("fingerprint") != fingerprint:
            return False
        for rel, size in rec.get("files", {}).items():
            p = self.path / rel
            if not p.is_file() or p.stat().st_size != size:
                return False
        return True

    def mark_complete(self, stage: str, files: list[str], fingerprint: str | None = None, seconds: float | None = None) -> None:
        stages = self._stages()
        stages[stage] = {
            "files": {rel: (self.path / rel).stat().st_size for rel in files},
            "fingerprint": fingerprint,
            "seconds": seconds,
        }
        write_json(self.path / self.STAGES_FILE, stages)

    def stage_seconds(self) -> dict:
        return {k: v.get("seconds") for k, v in self._stages().items()}
