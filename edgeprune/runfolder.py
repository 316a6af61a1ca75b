"""The run folder: one directory per build, one artifact (or sub-folder) per stage.

Every file is written to a temporary name in the same directory and renamed into place,
so an interrupted stage never leaves a half-written artifact that a resumed build would
trust. Each finished stage records itself in ``stages.json``: the files it produced (size
and sha256), the sha256 of every upstream file it consumed (the outputs of the stages before
it) and its config fingerprint. A stage is "complete" only if that record exists, its files
still have those hashes, its inputs are unchanged and its fingerprint matches; a stage about
to run loses its record first, so a failed run leaves nothing a rerun mistakes for success.

One writer at a time: :meth:`RunFolder.lock` holds ``.edgeprune.lock`` (an ``flock``, which the
kernel releases when the holder dies, so a killed build's lock is recovered) and names its
holder (pid, host, command) in ``.edgeprune.lock.holder`` for the messages of a second writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError


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


LOCK_FILE = ".edgeprune.lock"
HOLDER_FILE = ".edgeprune.lock.holder"
#: seconds a second writer waits for the holder before it gives up (exit 2); env EDGEPRUNE_LOCK_TIMEOUT
DEFAULT_LOCK_TIMEOUT = 1800.0


class RunFolderBusy(InputError):
    """Another process holds the run folder's lock (exit 2, the message names it)."""


def lock_timeout() -> float:
    raw = os.environ.get("EDGEPRUNE_LOCK_TIMEOUT", "")
    try:
        return float(raw) if raw else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        raise InputError(f"EDGEPRUNE_LOCK_TIMEOUT={raw!r} is not a number of seconds") from None


def describe_holder(path: Path) -> str:
    """'pid 123 on host (edgeprune build ...) since 21:04:05 UTC' from the holder file, or a fallback."""
    try:
        h = read_json(Path(path) / HOLDER_FILE)
        since = time.strftime("%H:%M:%S UTC", time.gmtime(h.get("since", 0)))
        return f"pid {h.get('pid')} on {h.get('host')} ({h.get('command')}) since {since}"
    except (OSError, ValueError, AttributeError):
        return "another process (its holder file is not written yet)"


class RunFolder:
    STAGES_FILE = "stages.json"

    def __init__(self, path: Path):
        self.path = Path(path)
        self._hashes: dict = {}  # rel -> ((size, mtime_ns), sha256): each file is hashed once per change

    @contextmanager
    def lock(self, warn=None, timeout: float | None = None, what: str = "run folder",
             fix: str = "build into another folder (--name)"):
        """Hold the folder's write lock for the block. A second writer calls ``warn`` once with who holds it and
        waits up to ``timeout`` seconds (default :func:`lock_timeout`), then raises :class:`RunFolderBusy`
        (its message names the folder as ``what`` and offers ``fix``)."""
        from filelock import FileLock, Timeout

        timeout = lock_timeout() if timeout is None else timeout
        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.path / LOCK_FILE)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = describe_holder(self.path)
            if timeout <= 0:
                raise RunFolderBusy(f"{what} {self.path} is in use by {holder}: wait for it to finish, or {fix}") from None
            if warn:
                warn(f"{what} {self.path} is in use by {holder}; waiting up to {timeout:g} s for it "
                     "(EDGEPRUNE_LOCK_TIMEOUT)")
            try:
                lock.acquire(timeout=timeout)
            except Timeout:
                raise RunFolderBusy(f"{what} {self.path} is still in use by {describe_holder(self.path)} after "
                                    f"{timeout:g} s: wait for it to finish, or {fix}") from None
        try:
            write_json(self.path / HOLDER_FILE, {"pid": os.getpid(), "host": socket.gethostname(),
                                                 "command": " ".join(["edgeprune", *sys.argv[1:]])[:200],
                                                 "since": time.time()})
            yield self
        finally:
            (self.path / HOLDER_FILE).unlink(missing_ok=True)
            lock.release()

    def sha256(self, rel: str) -> str | None:
        """sha256 of a run-folder file (None if it is missing), cached while its size and mtime stay."""
        p = self.path / rel
        try:
            st = p.stat()
        except OSError:
            return None
        key = (st.st_size, st.st_mtime_ns)
        hit = self._hashes.get(rel)
        if hit and hit[0] == key:
            return hit[1]
        h = file_sha256(p)
        self._hashes[rel] = (key, h)
        return h

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

    def record(self, stage: str) -> dict | None:
        return self._stages().get(stage)

    def stale_reason(self, stage: str, fingerprint: str | None = None) -> str | None:
        """None if ``stage`` is complete and current; else why not (one phrase for the log)."""
        rec = self._stages().get(stage)
        if not rec:
            return "not run yet"
        if rec.get("partial"):
            return "its last run was incomplete"
        if fingerprint is not None and rec.get("fingerprint") != fingerprint:
            return "its settings changed"
        files, inputs = rec.get("files"), rec.get("inputs")
        if not isinstance(files, dict) or not isinstance(inputs, dict):
            return "recorded by an older edgeprune (no content hashes)"
        for rel, meta in files.items():
            if not isinstance(meta, dict) or self.sha256(rel) != meta.get("sha256"):
                return f"its output {rel} is missing or changed"
        for rel, digest in inputs.items():
            if self.sha256(rel) != digest:
                return f"its input {rel} changed"
        return None

    def is_complete(self, stage: str, fingerprint: str | None = None) -> bool:
        return self.stale_reason(stage, fingerprint) is None

    def forget(self, stage: str) -> None:
        """Drop ``stage``'s record before it reruns: if the run fails, nothing claims it finished."""
        stages = self._stages()
        if stages.pop(stage, None) is not None:
            write_json(self.path / self.STAGES_FILE, stages)

    def outputs(self, stages) -> list[str]:
        """The files the records of ``stages`` produced (the inputs of the stage after them)."""
        recs = self._stages()
        return [rel for s in stages for rel in (recs.get(s) or {}).get("files", {})]

    def mark_complete(self, stage: str, files: list[str], fingerprint: str | None = None, seconds: float | None = None,
                      *, inputs: list[str] = (), partial: bool = False, sources: dict | None = None) -> None:
        """Record ``stage``: its output files and the upstream files it consumed (both with sha256);
        ``partial``: it ran but did not produce everything (a rerun retries it)."""
        stages = self._stages()
        stages[stage] = {
            "files": {rel: {"size": (self.path / rel).stat().st_size, "sha256": self.sha256(rel)} for rel in files},
            "inputs": {rel: self.sha256(rel) for rel in inputs if rel not in files},
            "fingerprint": fingerprint,
            "seconds": seconds,
            **({"partial": True} if partial else {}),
            **({"sources": sources} if sources is not None else {}),
        }
        write_json(self.path / self.STAGES_FILE, stages)

    def stage_seconds(self) -> dict:
        return {k: v.get("seconds") for k, v in self._stages().items()}
