"""Params and MACs counted on the compact model, two independent ways (edgeprune's graph, Torch-Pruning's counter)."""

from __future__ import annotations

import contextlib
import io

import numpy as np

def tp_counts(model, example) -> dict:
    """Torch-Pruning's own op counter (``tp.utils.count_ops_and_params``) on ``model``.

    ``ops``: TP's total, which also counts bias adds, BatchNorm/ReLU/pooling element ops and
    ConvTranspose at output positions. ``weight_macs``: TP's layer-wise conv/linear entries minus
    their bias term, ConvTranspose rescaled from output to input positions: the MACs every row is
    compared on (edgeprune's graph cost counts the same thing).
    """
    import torch_pruning as tp
    from torch import nn

    model.eval()
    with contextlib.redirect_stdout(io.StringIO()):
        ops, params, layer_flops, _ = tp.utils.count_ops_and_params(model, example, layer_wise=True)
    from ..surgery.graph import record_shapes

    named = record_shapes(model, example, (nn.modules.conv._ConvNd, nn.Linear))
    modules = dict(model.named_modules())
    weight_macs = 0
    for name, (ishape, oshape) in named.items():  # layers not run in forward are absent
        m = modules[name]
        f = float(layer_flops.get(m) or 0)
        if getattr(m, "bias", None) is not None:
            f -= m.out_features if isinstance(m, nn.Linear) else int(np.prod(oshape[1:]))
        if isinstance(m, nn.modules.conv._ConvTransposeNd):
            f = f * int(np.prod(ishape[2:])) / int(np.prod(oshape[2:]))
        weight_macs += int(round(f))
    return {"ops": int(ops), "params": int(params), "weight_macs": weight_macs}


def count_compact(model, example) -> dict:
    """Params and MACs of a (compact) model, counted on the model itself, two independent ways.

    ``macs``: edgeprune's graph cost of this very model (``analyze(model).dense_cost()``: conv/linear
    weight MACs, ConvTranspose at input positions), cross-checked against :func:`tp_counts`:
    ``macs_check`` is "ok" when TP's weight MACs equal the graph's and TP's, the graph's and the
    tensors' parameter counts are equal. ``tp_ops`` is TP's total op count (its own definition).
    """
    from ..surgery import analyze

    model.eval()
    cost = analyze(model, example).dense_cost()
    params = int(sum(p.numel() for p in model.parameters()))
    tpc = tp_counts(model, example)
    problems = []
    if tpc["weight_macs"] != cost["macs"]:
        problems.append(f"MACs: tp {tpc['weight_macs']} vs graph {cost['macs']}")
    if not (params == tpc["params"] == cost["params"]):
        problems.append(f"params: tensors {params}, tp {tpc['params']}, graph {cost['params']}")
    return {
        "params": params, "macs": int(cost["macs"]), "tp_ops": tpc["ops"], "tp_weight_macs": tpc["weight_macs"],
        "macs_check": "ok" if not problems else "; ".join(problems),
        "widths": _widths(model),
    }


def _widths(model) -> list[int]:
    """Output widths of the conv/linear layers in module order (the compact architecture)."""
    from torch import nn

    out = []
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            out.append(int(m.out_channels))
        elif isinstance(m, nn.Linear):
            out.append(int(m.out_features))
    return out


def widths_str(widths: list[int]) -> str:
    """``[11, 11, 11, 22]`` -> ``"11x3 22"`` (runs collapsed)."""
    parts, i = [], 0
    while i < len(widths):
        j = i
        while j + 1 < len(widths) and widths[j + 1] == widths[i]:
            j += 1
        n = j - i + 1
        parts.append(f"{widths[i]}x{n}" if n > 1 else str(widths[i]))
        i = j + 1
    return " ".join(parts)

