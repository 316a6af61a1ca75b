"""The ``ssh -o`` options edgeprune passes on: a short allow-list, from the user's command line or config only.

An option such as ``ProxyCommand``, ``LocalCommand`` or ``Include`` makes ssh run a local command
or read another file, so it is refused here whatever its source; a run folder's options are never
used at all (see :mod:`edgeprune.trust`). Anything else belongs in ``~/.ssh/config``.
"""

from __future__ import annotations

import re

from .errors import ConfigError

#: lower-case option name -> its spelling in ssh_config(5)
ALLOWED = {k.lower(): k for k in (
    "StrictHostKeyChecking", "UserKnownHostsFile", "GlobalKnownHostsFile", "ConnectTimeout", "ConnectionAttempts",
    "BatchMode", "ServerAliveInterval", "ServerAliveCountMax", "TCPKeepAlive", "IdentitiesOnly", "LogLevel",
    "Compression", "HostKeyAlias", "CheckHostIP", "AddressFamily", "HostKeyAlgorithms", "PubkeyAcceptedAlgorithms",
    "PreferredAuthentications", "PasswordAuthentication", "UpdateHostKeys", "HashKnownHosts",
)}
_VALUE_RE = re.compile(r"^[A-Za-z0-9_.,:/@%+~-]+$")  # no spaces, quotes, '=' or shell characters


def check_ssh_option(opt) -> str:
    """``Key=Value`` with an allowed key and a plain value, as ``ssh -o`` takes it; else a one-line ConfigError."""
    text = str(opt)
    key, sep, value = text.partition("=")
    if not sep:
        key, _, value = text.partition(" ")
    key, value = key.strip(), value.strip()
    if key.lower() not in ALLOWED:
        raise ConfigError(f"ssh option {text!r} is not allowed (allowed: {', '.join(sorted(ALLOWED.values()))}); "
                          "put other settings in ~/.ssh/config")
    if not value or not _VALUE_RE.match(value):
        raise ConfigError(f"ssh option {text!r}: the value must be one word without spaces, quotes or '='")
    return f"{ALLOWED[key.lower()]}={value}"


def check_ssh_options(opts) -> list[str]:
    return [check_ssh_option(o) for o in opts or ()]
