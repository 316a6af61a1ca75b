"""A throw-away OpenSSH server on 127.0.0.1: this machine as a "device" for the SSH measurement path (bench/remote.py).

Used by the tests of ``measure_remote`` / ``calibrate_remote`` and by benchmarks/costmodel/loopback.py, so both run
the real ssh client and server instead of a mock. The server runs as the current user; its host key, client keys,
``authorized_keys`` and config live in the directory given, and nothing outside it is touched except sshd's
privilege-separation directory ``/run/sshd``, which a root sshd insists on: created if missing and removed again.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SSHD = "/usr/sbin/sshd"


def available() -> bool:
    """Whether an OpenSSH server and ssh-keygen are installed here."""
    return os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def _config(d: Path, port: int, user: str) -> str:
    return (f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"PubkeyAuthentication yes\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
            f"AllowUsers {user}\nSubsystem sftp internal-sftp\nLogLevel ERROR\n")


@contextmanager
def loopback_sshd(d: Path, extra_keys: tuple = ()) -> Iterator[dict]:
    """Start sshd in ``d`` (an empty private directory) and yield ``{"host", "ssh", "dir", "proc"}``: ``host`` is
    ``user@127.0.0.1``, ``ssh`` the keyword arguments of ``measure_remote`` (port, identity, known_hosts, python =
    this interpreter). ``extra_keys`` are more client key files generated in ``d`` but NOT authorised (for testing
    refused logins). Raises RuntimeError with sshd's log if the server exits or does not listen within 10 s."""
    d = Path(d)
    d.chmod(0o700)
    for name in ("host_key", "client_key", *extra_keys):
        keygen(d / name)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    port = free_port()
    user = os.environ.get("USER") or __import__("getpass").getuser()
    (d / "sshd_config").write_text(_config(d, port, user))
    privsep = Path("/run/sshd")
    made_privsep = os.geteuid() == 0 and not privsep.exists()
    if made_privsep:
        privsep.mkdir(mode=0o755)
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(d / 'sshd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port}: {(d / 'sshd.log').read_text()}")
                time.sleep(0.05)
        ssh = {"port": port, "identity": str(d / "client_key"), "known_hosts": str(d / "known_hosts"),
               "python": sys.executable}
        yield {"host": f"{user}@127.0.0.1", "ssh": ssh, "dir": d, "proc": proc}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if made_privsep:
            shutil.rmtree(privsep, ignore_errors=True)
