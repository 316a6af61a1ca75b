"""edgeprune: prune, compact, export and benchmark neural networks for edge hardware.

The Python API (``edgeprune.build``, ``edgeprune.compact``, ``edgeprune.export_model``,
``edgeprune.benchmark``) is imported lazily so that ``import edgeprune`` stays cheap.
(``edgeprune.export`` and ``edgeprune.bench`` are the sub-packages of those stages.)
"""

from .version import __version__

_API = {"build", "compact", "export_model", "benchmark", "BuildResult"}


def __getattr__(name):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")
