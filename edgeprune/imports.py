"""Load a user's callable from ``path/to/file.py:name`` or ``package.module:name``.

Only code that the person typing the command named is ever imported: a spec given on the
command line, in their own TOML config (``--config`` or ``./edgeprune.toml``) or to the
Python API is recorded with :func:`name_code`; any other spec (one read from a run folder's
``config.json`` or a checkpoint's ``arch``) is refused with a one-line error that says how to
name it yourself. Built-in models, datasets and metrics come from the registries and are
never imported by name.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from .errors import InputError

#: code specs named by the user in this process (command line, own config, API)
_NAMED: set[str] = set()

#: what -> how the user names it on the command line (for the error message)
FLAGS = {"model factory": "--model FILE:factory", "metric": "--metric FILE:function",
         "dataset": "--dataset FILE:function"}


class UnnamedCodeError(InputError):
    """A file (run folder, checkpoint) names code that the user did not name: never run."""


def is_code_spec(spec) -> bool:
    """``file.py:function`` or ``package.module:function`` (registered names and paths are not code)."""
    return isinstance(spec, str) and ":" in spec and not spec.startswith(("memory:", "api:")) and not Path(spec).exists()


def name_code(*specs) -> None:
    """Record that the user named these code specs (non-code values are ignored)."""
    _NAMED.update(s for s in specs if is_code_spec(s))


def is_named(spec: str) -> bool:
    return spec in _NAMED


def refuse_message(spec: str, what: str, where: str = "a file") -> str:
    flag = FLAGS.get(what, "FILE:function")
    return (f"{where} names code ({what} {spec}); edgeprune runs only code you name yourself: if you trust it, "
            f"rerun with your own copy, {flag} (Python: edgeprune.imports.name_code(spec) first; see SECURITY.md)")


def load_callable(spec: str, *, what: str = "factory"):
    if ":" not in spec:
        raise InputError(f"{what} {spec!r} must look like file.py:function or package.module:function")
    if spec not in _NAMED:
        raise UnnamedCodeError(refuse_message(spec, what))
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise InputError(f"{what} file {target} not found")
        mod_name = "edgeprune_user_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
        if mod_name in sys.modules:
            module = sys.modules[mod_name]
        else:
            s = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(s)
            sys.modules[mod_name] = module
            try:
                s.loader.exec_module(module)
            except Exception as e:
                del sys.modules[mod_name]
                raise InputError(f"importing {target} failed: {type(e).__name__}: {e}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise InputError(f"cannot import {target} for the {what}: {e}") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise InputError(f"{target} has no callable {attr!r} (the {what})")
    return fn
