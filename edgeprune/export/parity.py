"""Every output of an artifact against torch's, one by one (torch is imported only by :func:`torch_outputs`).

A model returns one tensor or a tuple of tensors (see :func:`edgeprune.models.output_list`);
the artifacts name them ``output_0 .. output_{N-1}`` in that order (one output keeps its
exporter's name). Each output is compared with its own scale: ``rel_diff = max|artifact -
torch| / max|torch|`` of that output, so a small auxiliary head is not hidden behind large
logits. The entry's ``max_abs_diff`` / ``rel_diff`` are the worst output's, and an error
names that output.
"""

from __future__ import annotations

import numpy as np


def output_names(n: int) -> list[str]:
    """The names of ``n`` outputs in an artifact and its report."""
    return [f"output_{i}" for i in range(n)]


def torch_outputs(model, x: np.ndarray, batch: int = 256) -> list[np.ndarray]:
    """Every output of ``model`` on ``x`` (float32, one array per output, all samples)."""
    import torch

    from ..models import output_list

    chunks: list[list[np.ndarray]] = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs = output_list(model(torch.from_numpy(x[i : i + batch])))
            chunks.append([o.detach().to(torch.float32).cpu().numpy() for o in outs])
    return [np.concatenate([c[k] for c in chunks], axis=0) for k in range(len(chunks[0]))]


def shape_problem(outs: list[np.ndarray], refs: list[np.ndarray]) -> str | None:
    """Why the artifact's outputs cannot be compared with torch's (count or size), or None."""
    if len(outs) != len(refs):
        return f"the artifact has {len(outs)} output(s), torch's model {len(refs)}"
    for name, o, r in zip(output_names(len(refs)), outs, refs):
        if o.size != r.size:
            return f"{name}: shape {list(o.shape)} does not match torch's {list(r.shape)}"
    return None


def compare(outs: list[np.ndarray], refs: list[np.ndarray]) -> list[dict]:
    """Per output: ``{"name", "shape" (per sample), "max_abs_diff", "rel_diff", "finite"}``."""
    rows = []
    for name, o, r in zip(output_names(len(refs)), outs, refs):
        o = o.reshape(r.shape)
        diff = float(np.max(np.abs(o.astype(np.float64) - r.astype(np.float64)))) if r.size else 0.0
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        rows.append({"name": name, "shape": [int(d) for d in r.shape[1:]], "max_abs_diff": diff,
                     "rel_diff": diff / scale if scale > 0 else diff, "finite": bool(np.all(np.isfinite(o)))})
    return rows


def worst(rows: list[dict]) -> dict:
    """The output with the largest relative difference (the first non-finite one before all)."""
    bad = [r for r in rows if not r["finite"]]
    return bad[0] if bad else max(rows, key=lambda r: r["rel_diff"])


def parity_error(rows: list[dict], tolerance: float, first: int = 0) -> str | None:
    """Why outputs ``first..`` of ``rows`` fail ``rel_diff <= tolerance`` (naming the worst output), or None."""
    checked = rows[first:]
    if not checked:
        return None
    bad = worst(checked)
    named = f" ({bad['name']} of {len(rows)})" if len(rows) > 1 else ""
    if not bad["finite"]:
        return f"artifact produced non-finite outputs{named}"
    if bad["rel_diff"] > tolerance:
        return (f"parity failure{named}: relative max difference {bad['rel_diff']:.3g} to torch exceeds {tolerance:g} "
                f"(max abs diff {bad['max_abs_diff']:.3g})")
    return None
