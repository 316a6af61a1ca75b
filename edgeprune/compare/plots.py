"""The results figure: metric vs MACs kept and realised speed-up per method."""

from __future__ import annotations

import math

import numpy as np


def plot(summary: list[dict], metric_name: str, path, title: str = "") -> None:
    """Metric vs MACs kept and realised speed-up per method, as a PNG into ``path`` (a path or a binary file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    dense = [s for s in summary if s["level"] == 0]
    methods = [m for m in dict.fromkeys(s["method"] for s in summary if s["level"] > 0)]
    markers = "osD^v<>ph*Xd"
    for i, m in enumerate(methods):
        ss = sorted((s for s in summary if s["method"] == m and s["n"]), key=lambda s: s["macs_kept"])
        if not ss:
            continue
        x = [100 * s["macs_kept"] for s in ss]
        ls = "--" if ss[0]["kind"] == "torch-pruning" else "-"
        ax1.errorbar(x, [s["metric"] for s in ss], yerr=[s["metric_std"] for s in ss], label=m, capsize=3,
                     marker=markers[i % len(markers)], linestyle=ls)
        sp = [s["speedup"] for s in ss]
        if not all(math.isnan(v) for v in sp):
            ax2.errorbar(x, sp, yerr=[s["speedup_std"] for s in ss], label=m, capsize=3,
                         marker=markers[i % len(markers)], linestyle=ls)
    for d, style in zip(dense, (":", "-.")):
        if d["n"]:
            ax1.axhline(d["metric"], color="k", linestyle=style, label=f"{d['method']} ({d['metric']:.2f})")
    xs = np.linspace(5, 100, 100)
    ax2.plot(xs, 100 / xs, color="grey", linestyle=":", label="ideal (1 / MACs kept)")
    unit = {"accuracy": "test accuracy (%)", "psnr": "test PSNR (dB)"}.get(metric_name, metric_name)
    ax1.set(xlabel="MACs kept (% of dense, counted on the compact model)", ylabel=unit, title="metric vs MACs kept")
    ax2.set(xlabel="MACs kept (% of dense)", ylabel="measured speed-up vs dense (ORT, 1 thread)",
            title="realised latency speed-up")
    all_sp = [s["speedup"] for s in summary if s["n"] and not math.isnan(s["speedup"])]
    if all_sp:
        ax2.set_ylim(0, max(max(all_sp) * 1.3, 2.0))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


