"""edgeprune: prune, compact, export and benchmark neural networks for edge hardware."""

__version__ = "0.1.0"
