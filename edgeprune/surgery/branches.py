"""Droppable residual branches: ``y = post(x + f(x))`` blocks whose ``f`` can be removed whole.

Two kinds of block are recognised:

* an edgeprune :class:`~edgeprune.models.Residual` with an identity shortcut (its branch is
  ``block.branch``; dropped, the block becomes ``act(x)``);
* any other module of the user's own classes whose ``forward`` traces with ``torch.fx``
  (child modules kept whole) to a graph with exactly one input ``x`` and an addition
  ``x + f(x)`` (``+``, ``+=``, ``torch.add``, ``Tensor.add``) where

  - ``x`` is the block's input itself (an identity shortcut),
  - the other operand is the output of one child module (the *branch output*), used only
    by that addition and equal in shape to ``x``,
  - every node computing ``f(x)`` is used only inside ``f`` (nothing of ``f`` leaks past the
    addition), and every child module with parameters or buffers that ``f`` calls is called
    nowhere else, once per forward of the model.

  Dropped, the block becomes the same traced graph with the addition replaced by ``x`` (so
  ``relu(x + f(x))`` becomes ``relu(x)``, ``x + f(x)`` the identity). torchvision's
  ``BasicBlock``/``Bottleneck`` without a downsample match; a block whose shortcut is a
  layer (a strided downsample) does not, and neither does one whose forward cannot be
  traced (data-dependent control flow): those keep their branch.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

_ADDS = {operator.add, operator.iadd, torch.add}


class _ChildrenAsLeaves(fx.Tracer):
    """Trace only the block's own forward: every child module is one call."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return True


@dataclass
class TracedBranch:
    graph: fx.Graph
    add: fx.Node  # the addition x + f(x)
    x: fx.Node  # the block input
    other: fx.Node  # f(x): the branch output node
    output: str  # child module (relative name) whose output is f(x)
    modules: list[str]  # child modules (relative names) that only f uses


def _is_user_class(m: nn.Module) -> bool:
    mod = type(m).__module__ or ""
    return not (mod.startswith("torch.") or mod == "torch")


def _add_operands(n: fx.Node) -> tuple | None:
    if n.kwargs:
        return None
    if n.op == "call_function" and n.target in _ADDS and len(n.args) == 2:
        return n.args
    if n.op == "call_method" and n.target in ("add", "add_") and len(n.args) == 2:
        return n.args
    return None


def _ancestors(node: fx.Node, stop: fx.Node) -> list[fx.Node]:
    """Nodes ``node`` depends on (itself included), not walking past ``stop``."""
    seen, stack, out = set(), [node], []
    while stack:
        n = stack.pop()
        if n in seen or n is stop:
            continue
        seen.add(n)
        out.append(n)
        stack.extend(a for a in n.all_input_nodes)
    return out


def _has_state(m: nn.Module) -> bool:
    return any(True for _ in m.parameters()) or any(True for _ in m.buffers())


_MODULE_KEYS = frozenset(vars(nn.Module()))  # nn.Module's own bookkeeping (_modules, hooks, training, ...)
_SIMPLE = (bool, int, float, str, type(None))


def _trace_key(block: nn.Module):
    """What ``block``'s traced graph depends on: its class, its children's names and classes and its plain attributes
    (``stride``, ``use_res_connect``); None if it has any other attribute (a tensor, an object)."""
    attrs = []
    for k, v in vars(block).items():
        if k in _MODULE_KEYS:
            continue
        if isinstance(v, _SIMPLE) or (isinstance(v, tuple) and all(isinstance(e, _SIMPLE) for e in v)):
            attrs.append((k, v))
        else:
            return None
    return type(block), tuple((n, type(c)) for n, c in block._modules.items()), tuple(attrs)


def find_branch(block: nn.Module, calls: dict[str, int] | None = None, prefix: str = "",
                shapes: dict | None = None, traces: dict | None = None) -> TracedBranch | None:
    """The droppable ``x + f(x)`` of ``block``'s forward, or None.

    ``calls`` (module name -> calls per model forward) and ``shapes`` (module name -> (in, out)
    shape), both keyed by full names starting with ``prefix``, add the once-per-forward and
    same-shape checks; without them only the graph structure is checked. ``traces`` caches
    the traced graphs of blocks alike (:func:`_trace_key`) over calls: a ResNet-50 traces 2 blocks, not 16.
    """
    if not _is_user_class(block) or not list(block.children()):
        return None
    key = _trace_key(block) if traces is not None else None
    if key is not None and key in traces:
        graph = traces[key]
    else:
        try:
            graph = _ChildrenAsLeaves().trace(block)
        except Exception:  # noqa: BLE001 - untraceable forward: no structural branch
            graph = None
        if key is not None:
            traces[key] = graph
    if graph is None:
        return None
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None
    x = placeholders[0]
    for n in graph.nodes:
        ops = _add_operands(n)
        if ops is None or x not in ops or ops[0] is ops[1]:
            continue
        other = ops[1] if ops[0] is x else ops[0]
        found = _check(graph, n, x, other, block, calls, prefix, shapes)
        if found is not None:
            return found
    return None


def _check(graph, add, x, other, block, calls, prefix, shapes) -> TracedBranch | None:
    if not isinstance(other, fx.Node) or other.op != "call_module" or len(other.users) != 1:
        return None
    f_nodes = _ancestors(other, x)
    inside = set(f_nodes)
    if any(u not in inside for n in f_nodes if n is not other for u in n.users):
        return None  # part of f(x) is used past the addition
    if any(n.op == "placeholder" for n in f_nodes):
        return None
    mods = list(dict.fromkeys(n.target for n in f_nodes if n.op == "call_module"))
    outside = {n.target for n in graph.nodes if n.op == "call_module" and n not in inside}
    outside |= {n.target.split(".")[0] for n in graph.nodes if n.op == "get_attr" and n not in inside}
    mine = []
    for t in mods:
        m = block.get_submodule(t)
        if _has_state(m):
            if t in outside:
                return None  # a layer with weights used both in f and past the addition
            full = f"{prefix}.{t}" if prefix else t
            if calls is not None and calls.get(full, 0) != 1:
                return None
            mine.append(t)
    if not mine:
        return None
    if shapes is not None:
        out_full = f"{prefix}.{other.target}" if prefix else other.target
        blk = shapes.get(prefix)
        sub = shapes.get(out_full)
        if blk is None or sub is None or blk[0] != sub[1]:
            return None
    return TracedBranch(graph, add, x, other, other.target, [t for t in mods if t not in outside])


def dropped_block(block: nn.Module, found: TracedBranch) -> fx.GraphModule:
    """``block`` with ``f`` removed: the traced graph where ``x + f(x)`` is replaced by ``x``."""
    graph, copies = fx.Graph(), {}
    graph.output(graph.graph_copy(found.graph, copies))
    add, x = copies[found.add], copies[found.x]
    inside = {copies[n] for n in _ancestors(found.other, found.x)}
    add.replace_all_uses_with(x)
    graph.erase_node(add)
    for n in reversed(list(graph.nodes)):
        if n in inside and not n.users:
            graph.erase_node(n)
    gm = fx.GraphModule(block, graph, class_name=f"{type(block).__name__}WithoutBranch")
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def branch_output_module(block: nn.Module) -> nn.Module:
    """The module whose output is a droppable block's branch contribution ``f(x)``.

    For a :class:`~edgeprune.models.Residual` it is ``block.branch``; for a traced block the
    child module found by :func:`find_branch`. Scaling this module's output scales the branch.
    """
    from ..models import Residual

    if isinstance(block, Residual):
        return block.branch
    found = find_branch(block)
    if found is None:
        raise ValueError(f"{type(block).__name__} has no droppable residual branch")
    return block.get_submodule(found.output)
