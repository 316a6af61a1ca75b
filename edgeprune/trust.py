"""What a run folder may make edgeprune do: its recorded data is read, its recorded code is never run.

A run folder is something people zip and send. Its ``config.json`` names the model factory,
metric and dataset the run was built with, and its checkpoints name their architecture; when
those are code (``file.py:function`` / ``package.module:function``), a stage command on the
folder runs them only if the user names the same code on its command line (``--model``,
``--metric``, ``--dataset``); the file then must still hash to what the run recorded. The
device-connection settings (``bench.remote``, ``ssh_options``, ``python``, ...) of a folder are
dropped: they come from the command line only. See SECURITY.md.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError
from .imports import FLAGS, is_code_spec, name_code

#: config key -> what the code is (the key of imports.FLAGS)
CODE_KEYS = {"model": "model factory", "metric": "metric", "dataset": "dataset"}

#: the [bench] keys that reach a device (ssh / adb): never taken from a run folder
DEVICE_KEYS = ("remote", "port", "identity", "python", "ssh_options", "adb", "benchmark_binary")


def _callable_name(spec: str) -> str:
    return spec.rpartition(":")[2]


def adopt_user_code(cfg: dict, given: dict, run_dir: Path, command: str) -> dict:
    """The run folder's ``cfg`` with its code specs replaced by the ones the user ``given`` (key -> spec or None).

    Recorded code without a user's spec is a one-line error saying how to name it; a user's spec must
    name the same function as the recorded one. Returns {recorded spec: user spec} for checkpoint
    architectures that name the recorded spec."""
    aliases = {}
    for key, what in CODE_KEYS.items():
        recorded, mine = cfg.get(key) or "", given.get(key)
        if mine:
            name_code(mine)
        if not is_code_spec(recorded):
            if mine and mine != recorded:
                raise InputError(f"--{key} {mine}: this run was built with {key} {recorded or 'the default'}, not "
                                 "your code; drop the option")
            continue
        if not mine:
            raise InputError(f"{run_dir} names code ({what} {recorded}); edgeprune runs only code you name yourself: "
                             f"if you trust it, rerun with your own copy: `edgeprune {command} {run_dir} "
                             f"{FLAGS[what]}` (see SECURITY.md)")
        if _callable_name(mine) != _callable_name(recorded):
            raise InputError(f"--{key} {mine} names function {_callable_name(mine)!r}, but this run was built with "
                             f"{recorded}: give the same function")
        cfg[key] = mine
        aliases[recorded] = mine
    return aliases


def check_sources(recorded: dict | None, current: dict, run_dir: Path) -> None:
    """The user's code files must be the bytes the run was built with (``recorded``: the train stage's
    source digests in stages.json; absent for runs of an older edgeprune)."""
    if not recorded:
        return
    for key in CODE_KEYS:
        old, new = recorded.get(key), current.get(key)
        if old and new and old != new:
            raise InputError(f"the {key} code you named differs from the code {run_dir} was built with (its "
                             f"sha256 changed): give the original file, or rebuild with `edgeprune build`")


def drop_device_settings(cfg: dict, defaults: dict) -> None:
    """Reset the folder's device-connection settings: ssh/adb options come from the command line only."""
    for k in DEVICE_KEYS:
        cfg["bench"][k] = defaults["bench"][k]
