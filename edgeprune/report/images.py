"""Reconstruction image grid for reconstruction runs: originals, the dense model, each pruned variant.

:func:`reconstruction_grid` writes a PNG (rows = original / dense / variants, columns = samples,
each row labelled with its name and, when given, its PSNR); :func:`write_reconstructions`
runs the models on a few validation images and writes ``reconstructions.png`` into a run or
history folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GRID_FILE = "reconstructions.png"


def _as_images(a: np.ndarray, n: int) -> np.ndarray:
    """(N, C, H, W) or (N, H, W) -> (n, H, W) or (n, H, W, 3), scaled into [0, 1] per the first row's range."""
    a = np.asarray(a, dtype=np.float32)[:n]
    if a.ndim == 4:
        a = a[:, 0] if a.shape[1] == 1 else np.transpose(a[:, :3], (0, 2, 3, 1))
    return a


def reconstruction_grid(original: np.ndarray, rows: dict[str, np.ndarray], path: Path, *, n: int = 8,
                        scores: dict[str, float] | None = None, unit: str = "dB", vmin: float | None = None,
                        vmax: float | None = None) -> Path:
    """Write a PNG: first row ``original``, then one row per ``rows`` entry (label -> model outputs).

    All rows share the originals' value range (or ``vmin``/``vmax``), so darker or washed-out
    reconstructions show as such. Written atomically (a temporary file, then renamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..runfolder import atomic_write_bytes

    orig = _as_images(original, n)
    n = len(orig)
    lo = float(orig.min()) if vmin is None else vmin
    hi = float(orig.max()) if vmax is None else vmax
    all_rows = [("original", orig)] + [(k, _as_images(v, n)) for k, v in rows.items()]
    fig, axes = plt.subplots(len(all_rows), n, figsize=(1.1 * n + 1.6, 1.15 * len(all_rows)), squeeze=False)
    for r, (label, imgs) in enumerate(all_rows):
        for j in range(n):
            ax = axes[r][j]
            ax.imshow(imgs[j], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        text = label if not scores or label not in scores else f"{label}\n{scores[label]:.2f} {unit}"
        axes[r][0].set_ylabel(text, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def write_reconstructions(folder: Path, x: np.ndarray, models: dict, *, n: int = 8, scores: dict | None = None,
                          name: str = GRID_FILE) -> Path:
    """Run each model (label -> nn.Module, e.g. {"dense": ..., "soft-coef": ...}) on ``x[:n]`` and write the grid."""
    from ..train import predict

    x = np.asarray(x[:n], dtype=np.float32)
    rows = {label: predict(m, x) for label, m in models.items()}
    return reconstruction_grid(x, rows, Path(folder) / name, n=n, scores=scores)


def inline_png(path: Path, caption: str = "", alt: str = "reconstructions") -> str:
    """A ``<figure>`` embedding the PNG as a data URI, for the self-contained report.html ("" if absent)."""
    import base64
    import html

    path = Path(path)
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (f'<figure><img alt="{html.escape(alt)}" style="max-width:100%;image-rendering:pixelated" '
            f'src="data:image/png;base64,{data}">{cap}</figure>')
