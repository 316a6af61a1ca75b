"""Let a sub-package double as an API function: ``edgeprune.export(...)`` calls
``edgeprune.api.export`` while ``edgeprune.export.export_all`` stays the module's."""

from __future__ import annotations

import importlib
import sys
import types


def make_callable(module_name: str, api_function: str) -> None:
    module = sys.modules[module_name]

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(importlib.import_module("edgeprune.api"), api_function)(*args, **kwargs)

    module.__class__ = _CallableModule
