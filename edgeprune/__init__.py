"""edgeprune: prune, compact, export and benchmark neural networks for edge hardware.

The Python API (``edgeprune.build``, ``edgeprune.compact``, ``edgeprune.export``,
``edgeprune.bench``) is imported lazily so that ``import edgeprune`` stays cheap.
"""

from .version import __version__

_API = {"build", "compact", "export", "bench", "BuildResult"}


def __getattr__(name):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")
