"""Shapes hard-coded in ``forward()``: ``x.view(-1, 576)`` rewritten on a torch.fx trace.

A flatten written with its width as a literal (``x.view(-1, 576)``, ``x.reshape(n, 576)``)
breaks as soon as the channels before it shrink. Every such reshape the trace saw that is a
flatten in effect (``(N, C, ...) -> (N, C*...)``) with the width among its arguments is listed
by :func:`find_hard_coded`; :func:`apply_rewrites` traces the module whose ``forward`` runs it
with :func:`torch.fx.symbolic_trace` and replaces the node by ``torch.flatten(x, 1)``, which
computes the same thing at full width and the right thing at any width. A module torch.fx
cannot trace, or a reshape not found in the fx graph, is refused naming the source line.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx
from torch import nn

from ..errors import UnsupportedModelError
from .trace import OpRecorder


@dataclass
class Rewrite:
    module: str  # the module whose forward runs the reshape ("" = the model)
    op: str  # view | reshape
    args: tuple  # its integer arguments as recorded
    line: str  # "file.py:LINE"

    def describe(self) -> str:
        at = f" at {self.line}" if self.line else ""
        return f"{self.op}{tuple(self.args)}{at}"


def _ints(args) -> list:
    out = []
    for a in args:
        if isinstance(a, (list, tuple, torch.Size)):
            out.extend(_ints(a))
        else:
            out.append(a)
    return out


def find_hard_coded(rec: OpRecorder) -> list[Rewrite]:
    """Flatten-like reshapes whose width is a literal argument, in trace order (one per call site)."""
    found: dict[tuple, Rewrite] = {}
    for info in rec.info.values():
        if not info.seen or info.op not in ("view", "reshape"):
            continue
        ins, outs = info.in_shape or (), info.out_shape or ()
        if len(ins) < 3 or len(outs) != 2 or outs[0] != ins[0]:
            continue
        width = 1
        for s in ins[1:]:
            width *= int(s)
        args = _ints(info.args)
        if outs[1] != width or width <= 1 or width not in args or not all(isinstance(a, int) for a in args):
            continue
        key = (info.module, info.op, tuple(args), info.line)
        found.setdefault(key, Rewrite(info.module, info.op, tuple(args), info.line))
    return list(found.values())


def apply_rewrites(model: nn.Module, rewrites: list[Rewrite]) -> nn.Module:
    """``model`` with each listed reshape replaced by ``torch.flatten(x, 1)`` (modules rewritten as fx GraphModules)."""
    by_module: dict[str, list[Rewrite]] = {}
    for r in rewrites:
        by_module.setdefault(r.module, []).append(r)
    for name in sorted(by_module, key=lambda n: -n.count(".") if n else 1):  # innermost first, the model last
        sub = model.get_submodule(name) if name else model
        new = _rewrite(sub, by_module[name], name)
        if not name:
            model = new
        else:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, new)
    return model


def _rewrite(module: nn.Module, rewrites: list[Rewrite], name: str) -> nn.Module:
    where = f"module {name} ({type(module).__name__})" if name else f"the forward of the model ({type(module).__name__})"
    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as e:  # noqa: BLE001 - fx raises many kinds
        r = rewrites[0]
        raise UnsupportedModelError(
            f"unsupported op: {r.describe()} in {where} hard-codes a width that changes when channels are removed, "
            f"and torch.fx cannot trace that forward to rewrite it ({type(e).__name__}); write x.flatten(1) there"
        ) from None
    for r in rewrites:
        node = _find(gm.graph, r)
        if node is None:
            raise UnsupportedModelError(
                f"unsupported op: {r.describe()} in {where} hard-codes a width that changes when channels are "
                "removed, and it is not in the module's torch.fx graph; write x.flatten(1) there"
            )
        with gm.graph.inserting_after(node):
            flat = gm.graph.call_function(torch.flatten, (node.args[0], 1))
        node.replace_all_uses_with(flat)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return gm


def _find(graph: torch.fx.Graph, r: Rewrite):
    for node in graph.nodes:
        is_reshape = (node.op == "call_method" and node.target == r.op) or (
            node.op == "call_function" and node.target in (torch.reshape,) and r.op == "reshape")
        if is_reshape and _ints(node.args[1:]) == list(r.args) and all(isinstance(a, int) for a in _ints(node.args[1:])):
            return node
    return None
