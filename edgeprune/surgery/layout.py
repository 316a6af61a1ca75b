"""Channels-last flattens: which input column of a Linear belongs to which channel.

Torch-Pruning maps ``flatten -> Linear`` as if the channels were the outermost dimension
(channel ``c`` owns columns ``c*HW .. (c+1)*HW - 1``). After ``x.permute(0, 2, 3, 1)`` or
``x.transpose(1, 3)`` the columns are ordered ``(h, w, c)``: channel ``c`` owns every
``C``-th column, and cutting the channel-first block would keep the wrong weights.

:func:`find_remaps` finds, on the recorded trace, every Linear whose input is a chain of
layout ops (permute / transpose / flatten / a reshape to ``(N, -1)``, with element-wise ops in
between) applied to an ``(N, C, ...)`` tensor, and computes the chain's column order
(:func:`column_order`: column ``j`` holds channel-first element ``order[j]``). The compaction
then reorders that Linear's columns to channel-first before Torch-Pruning cuts them
(:func:`to_channel_first`) and back to the chain's order for the kept channels afterwards
(:func:`from_channel_first`); the masked reference maps Torch-Pruning's channel-first column
indices through the same order. The layout ops of such a chain are accepted by the op check.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .trace import OpRecorder

MOVES = {"permute", "transpose", "swapaxes", "t"}
FLATTENS = {"flatten", "view", "reshape"}
NEUTRAL = {"contiguous", "clone", "relu", "relu_", "gelu", "silu", "sigmoid", "tanh", "hardswish", "dropout", "to",
           "float", "leaky_relu", "elu", "relu6", "hardtanh", "mish"}


@dataclass
class Remap:
    linear: str
    shape: tuple  # the (N, C, ...) shape entering the chain
    steps: list  # (op, args) in forward order
    nodes: list  # the chain's autograd nodes (accepted by the op check)

    def order(self, channels: int | None = None) -> torch.Tensor:
        shape = (1, channels if channels is not None else self.shape[1], *self.shape[2:])
        return column_order(shape, self.steps)


def column_order(shape: tuple, steps: list) -> torch.Tensor:
    """Column ``j`` of the chain's output holds element ``order[j]`` of the channel-first flattening."""
    x = torch.arange(int(torch.tensor(shape[1:]).prod())).view(shape)
    for op, args in steps:
        if op == "permute":
            dims = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
            x = x.permute(*dims)
        elif op in ("transpose", "swapaxes"):
            x = x.transpose(args[0], args[1])
        elif op == "t":
            x = x.t()
    return x.reshape(-1)


def find_remaps(rec: OpRecorder, modules: dict) -> dict[str, Remap]:
    """Linear layer -> its channels-last flatten chain (only chains that do move the channel dimension)."""
    out = {}
    for name, ins in rec.layer_in.items():
        if not isinstance(modules.get(name), nn.Linear) or len(ins) != 1:
            continue
        chain = _chain(ins[0], rec, modules)
        if chain is None:
            continue
        shape, steps, nodes = chain
        lin = modules[name]
        n = int(torch.tensor(shape[1:]).prod())
        if n != lin.in_features:
            continue
        order = column_order((1, *shape[1:]), steps)
        if not torch.equal(order, torch.arange(n)):
            out[name] = Remap(name, tuple(shape), steps, nodes)
    return out


PER_CHANNEL_OPS = {"batch_norm", "layer_norm", "prelu", "add", "mul", "__add__", "__mul__", "__radd__", "__rmul__"}


def _chain(fn, rec: OpRecorder, modules: dict):
    """``(conv output shape, steps, nodes)`` of a layout chain from a conv's output to a flatten to (N, -1), or None.

    The chain must start at a convolution (whose output has the channels at dimension 1) and
    pass only through layout moves, one final flatten, element-wise and per-channel ops.
    """
    steps, nodes, moved, flat = [], [], False, False
    while fn is not None and fn not in rec.layer_out:
        info = rec.info.get(fn)
        if info is None or (not info.seen and info.parent not in MOVES | FLATTENS | NEUTRAL | PER_CHANNEL_OPS):
            return None
        if not info.seen:
            pass  # a step inside a layout op (the copy flatten makes of a permuted tensor)
        elif info.op in MOVES:
            steps.append((info.op, tuple(info.args)))
            moved = True
        elif info.op in FLATTENS:
            if flat or not info.out_shape or len(info.out_shape) != 2:
                return None  # reshapes other than one final flatten to (N, F)
            flat = True
        elif info.op not in NEUTRAL | PER_CHANNEL_OPS:
            return None
        nodes.append(fn)
        nxt = [f for f, _ in fn.next_functions if f is not None and not _only_parameters(f)]
        if len(nxt) != 1:
            return None
        fn = nxt[0]
    layer = rec.layer_out.get(fn)
    if layer is None or not isinstance(modules.get(layer), nn.modules.conv._ConvNd) or not (moved and flat):
        return None
    shape = rec.calls[layer].out_shape
    if shape is None or len(shape) < 3:
        return None
    steps.reverse()
    return shape, steps, nodes


def _only_parameters(fn, depth: int = 4) -> bool:
    """Whether autograd node ``fn`` computes from parameters only (a weight, a weight's view): not the data path."""
    if type(fn).__name__ == "AccumulateGrad":
        return True
    if depth == 0:
        return False
    nxt = [f for f, _ in fn.next_functions if f is not None]
    return bool(nxt) and all(_only_parameters(f, depth - 1) for f in nxt)


def to_channel_first(linear: nn.Linear, remap: Remap) -> None:
    """Reorder the Linear's columns from the chain's order to channel-first (in place)."""
    order = remap.order()
    with torch.no_grad():
        w = torch.empty_like(linear.weight)
        w[:, order] = linear.weight
        linear.weight.copy_(w)


def from_channel_first(linear: nn.Linear, remap: Remap, channels: int) -> None:
    """After the cut: reorder the (channel-first) kept columns back to the chain's order with ``channels`` channels."""
    order = remap.order(channels)
    with torch.no_grad():
        linear.weight.copy_(linear.weight[:, order])


def column_of(remap: Remap, channel_first: torch.Tensor) -> torch.Tensor:
    """The Linear's column indices holding the given channel-first element indices (full width)."""
    return torch.argsort(remap.order())[channel_first]
