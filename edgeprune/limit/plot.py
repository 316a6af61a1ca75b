"""The figures of a limit estimate: the Hessian spectral density and the s = g(R(s)) crossing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .slq import Density
from .threshold import RadiusCurve, g_of_r


def plot_limit(path: Path, density: Density, eps: float, weights: np.ndarray, s_star: float,
               actual: dict | None = None, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    th, tau = density.nodes, density.weights
    lim = max(float(np.abs(th).max()), 1e-12)
    lin = max(lim * 1e-4, 1e-8)
    edges = np.concatenate([-np.geomspace(lim, lin, 30), [0.0], np.geomspace(lin, lim, 30)])
    edges = np.unique(edges)
    a1.hist(th, bins=edges, weights=tau, color="#3b6ea8")
    a1.set_xscale("symlog", linthresh=lin)
    a1.set_yscale("log")
    a1.set_xlabel("Hessian eigenvalue (Ritz value)")
    a1.set_ylabel("SLQ density mass")
    a1.set_title("spectrum (prunable weights)")
    s = np.linspace(0, 1, 201)
    rc = RadiusCurve(weights)
    a2.plot(s, [g_of_r(rc(x), density, eps) for x in s], label="g(R(s))", color="#2a8a4a")
    a2.plot(s, s, "k:", label="s")
    a2.axvline(s_star, color="#2a8a4a", ls="--", label=f"predicted s* = {s_star:.3f}")
    if actual:
        c = np.array(actual["curve"])
        ax3 = a2.twinx()
        ax3.plot(c[:, 0], c[:, 1], ".", ms=3, color="#b04a3a")
        ax3.set_ylabel("test metric after one-shot pruning", color="#b04a3a")
        a2.axvline(actual["limit"], color="#b04a3a", ls="--", label=f"actual limit = {actual['limit']:.3f}")
    a2.set_xlabel("pruned fraction s")
    a2.set_ylim(0, 1.02)
    a2.legend(loc="lower left", fontsize=8)
    a2.set_title(title or "threshold")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
