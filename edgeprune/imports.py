"""Load a user's callable from ``path/to/file.py:name`` or ``package.module:name``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from .errors import InputError


def load_callable(spec: str, *, what: str = "factory"):
    if ":" not in spec:
        raise InputError(f"{what} {spec!r} must look like file.py:function or package.module:function")
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
