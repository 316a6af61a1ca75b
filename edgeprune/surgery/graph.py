"""Coupled-channel groups, droppable residual branches and an exact cost table.

Torch-Pruning's ``DependencyGraph`` does the coupling analysis (which output channels of
which layers must be removed together: residual adds, concat slices, depthwise convs,
flatten -> linear, transposed convs). This module wraps it in edgeprune types:

* :class:`Group` -- a named set of coupled channels (named after its root layer) with its
  channel count and what one channel costs in parameters and MACs;
* :class:`Branch` -- a residual branch ``y = act(x + f(x))`` that can be dropped whole;
* :class:`ModelGraph` -- both, plus a per-layer cost table that predicts the exact
  parameter count and MACs of the compact model for any kept widths and dropped branches,
  without building it (methods use it to meet FLOPs budgets).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from ..errors import UnsupportedModelError
from ..models import Residual

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Modules whose parameters the cost table models exactly; anything else with parameters
# is counted as a constant and refused if it sits inside a group.
MODELLED = PRUNABLE + NORMS


@dataclass
class Group:
    name: str  # name of the root layer (whose output channels define the group)
    size: int  # channel count
    members: list[str]  # "layer:out" / "layer:in" entries, for display and debugging
    params_per_channel: int = 0  # cost of one channel at full width
    macs_per_channel: int = 0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "size": self.size,
            "params_per_channel": self.params_per_channel,
            "macs_per_channel": self.macs_per_channel,
            "members": self.members,
        }


@dataclass
class Branch:
    name: str  # module name of the Residual block
    layers: list[str]  # prunable/norm layers inside the branch
    params: int = 0
    macs: int = 0

    def to_dict(self) -> dict:
        return {"name": self.name, "params": self.params, "macs": self.macs}


@dataclass
class LayerCost:
    """How one layer's parameters and MACs depend on which channels are kept.

    A layer's output (input) channels are partly owned by coupled groups: ``out_parts``
    (``in_parts``) lists, per group, the group's channel index ("root index") behind each
    of the layer's own channels; channels in no group are fixed. With a concat feeding a
    residual add, one group spans several layers, each owning part of it: costs then
    depend on *which* channels are kept, not only how many, and :meth:`cost_of_sets`
    is exact while :meth:`cost` (counts only) is proportional.
    """

    name: str
    kind: str  # conv | depthwise | convT | linear | norm
    out_full: int
    out_parts: list[tuple[str, list[int]]]  # (group, root index of each owned output channel)
    in_full: int
    in_parts: list[tuple[str, list[int]]]  # (group, root index of each owned input channel; flatten repeats)
    kernel: int  # product of kernel dims (1 for linear / norm)
    spatial: int  # output positions per sample (conv: H*W of output, convT: of input)
    bias: bool  # conv/linear: has bias; norm: affine
    groups: int = 1

    def _params_macs(self, out: int, cin: int) -> tuple[int, int]:
        if self.kind == "norm":
            return (2 * out if self.bias else 0), 0
        if self.kind == "depthwise":
            params = out * self.kernel
        else:
            params = out * (cin // self.groups) * self.kernel
        return params + (out if self.bias else 0), params * self.spatial

    def cost(self, widths: dict[str, int], sizes: dict[str, int]) -> tuple[int, int]:
        """(params, MACs) for kept channel *counts* per group."""
        def kept(full, parts):
            n = full
            for g, roots in parts:
                n -= len(roots) - int(round(len(roots) * widths[g] / sizes[g]))
            return n

        return self._params_macs(kept(self.out_full, self.out_parts), kept(self.in_full, self.in_parts))

    def cost_of_sets(self, keep: dict[str, set[int]]) -> tuple[int, int]:
        """(params, MACs) for kept channel *index sets* per group (absent group: all kept)."""
        def kept(full, parts):
            n = full
            for g, roots in parts:
                if g in keep:
                    n -= sum(1 for r in roots if r not in keep[g])
            return n

        return self._params_macs(kept(self.out_full, self.out_parts), kept(self.in_full, self.in_parts))


@dataclass
class ModelGraph:
    groups: dict[str, Group]
    branches: dict[str, Branch]
    layers: dict[str, LayerCost]
    const_params: int  # parameters the table does not model (fixed under pruning)
    ignored: list[str] = field(default_factory=list)
    _tp_graph: object = None  # the torch_pruning DependencyGraph (not serialised)
    _modules: dict = field(default_factory=dict)

    # ----------------------------------------------------------------- costs
    def full_keep(self) -> dict[str, int]:
        return {g.name: g.size for g in self.groups.values()}

    def cost(self, keep: dict[str, int] | None = None, dropped: list[str] | tuple = ()) -> dict[str, int]:
        """Parameters and MACs of the compact model for kept widths per group and dropped branches.

        Exact whenever every layer of a group owns all of its channels (all built-in models);
        use :meth:`cost_of_sets` for the exact figure of a concrete plan.
        """
        sizes = self.full_keep()
        widths = dict(sizes, **(keep or {}))
        return self._sum(lambda lc: lc.cost(widths, sizes), dropped)

    def cost_of_sets(self, keep: dict[str, set[int]], dropped: list[str] | tuple = ()) -> dict[str, int]:
        """Exact parameters and MACs for kept channel index sets per group."""
        sets = {g: set(v) for g, v in keep.items()}
        return self._sum(lambda lc: lc.cost_of_sets(sets), dropped)

    def _sum(self, layer_cost, dropped) -> dict[str, int]:
        skip = {layer for b in dropped for layer in self.branches[b].layers}
        params, macs = self.const_params, 0
        for lc in self.layers.values():
            if lc.name not in skip:
                p, m = layer_cost(lc)
                params += p
                macs += m
        return {"params": params, "macs": macs}

    def dense_cost(self) -> dict[str, int]:
        return self.cost()

    def summary(self) -> dict:
        return {
            "groups": [g.to_dict() for g in self.groups.values()],
            "branches": [b.to_dict() for b in self.branches.values()],
            "dense": self.dense_cost(),
            "ignored": self.ignored,
        }


@contextmanager
def one_thread():
    """Batch-1 tracing runs on one thread: on a busy 2-core machine, torch's second OpenMP
    thread made a ResNet-18 forward 40x slower (1.16 s vs 0.025 s, measured here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _output_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The prunable layers that run last: their output width is the model's output."""
    order: list[str] = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: order.append(n))
        for n, m in model.named_modules()
        if isinstance(m, PRUNABLE)
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return order[-1:] if order else []


def record_shapes(model: nn.Module, example: torch.Tensor, types: tuple = MODELLED) -> dict[str, tuple[tuple, tuple]]:
    """Module name -> (input shape, output shape) of its first call, for modules of ``types``."""
    shapes: dict[str, tuple[tuple, tuple]] = {}

    def hook(n):
        def fn(mod, i, o):
            shapes.setdefault(n, (tuple(i[0].shape), tuple(o.shape)))  # first call only (shared modules)

        return fn

    hooks = [
        m.register_forward_hook(hook(n))
        for n, m in model.named_modules()
        if isinstance(m, types)
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _check_supported(model: nn.Module, example: torch.Tensor) -> None:
    """Refuse graphs the coupling analysis cannot see through (custom autograd functions)."""
    x = example.clone().requires_grad_(True)
    out = model(x)
    outs = out if isinstance(out, (tuple, list)) else [out]
    seen, stack = set(), [o.grad_fn for o in outs if o.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if isinstance(fn, torch.autograd.function.BackwardCFunction):
            cls = getattr(fn, "_forward_cls", None)
            name = getattr(cls, "__name__", "custom autograd Function")
            raise UnsupportedModelError(
                f"unsupported op: custom autograd function {name!r}; the channel analysis cannot see through it "
                "(replace it with standard torch ops, or exclude its layers with ignored_layers)"
            )
        stack.extend(f for f, _ in fn.next_functions if f is not None)


def analyze(
    model: nn.Module, example: torch.Tensor, ignored_layers: list[str] | None = None, *, strict: bool = True
) -> ModelGraph:
    """Find coupled groups, droppable branches and the cost table of ``model``.

    ``ignored_layers`` names layers whose output channels must stay (the model output is
    always kept). The model is only read, never changed.
    """
    was_training = model.training
    model.eval()
    try:
        with one_thread():
            return _analyze(model, example, ignored_layers, strict)
    finally:
        model.train(was_training)


def _analyze(model, example, ignored_layers, strict) -> ModelGraph:
    _check_supported(model, example)
    names = {m: n for n, m in model.named_modules()}
    modules = dict(model.named_modules())
    ignored = list(dict.fromkeys((ignored_layers or []) + _output_layers(model, example)))
    for n in ignored:
        if n not in modules:
            raise UnsupportedModelError(f"ignored layer {n!r} is not a module of the model")
    # grouped (non-depthwise) convs: torch-pruning's channel mapping for them is partial;
    # keep their widths fixed rather than risk a wrong model.
    for n, m in modules.items():
        if isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and not (m.groups == m.in_channels == m.out_channels):
            ignored.append(n)
    shapes = record_shapes(model, example)
    # ignored layers only stop groups from being rooted there; passing them to
    # build_dependency would also freeze their *input* channels and break coupling.
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    groups: dict[str, Group] = {}
    out_parts: dict[str, list[tuple[str, list[int]]]] = {}
    in_parts: dict[str, list[tuple[str, list[int]]]] = {}
    ignored_mods = [modules[n] for n in ignored]
    for g in dg.get_all_groups(ignored_layers=ignored_mods, root_module_types=list(PRUNABLE)):
        root = names[g[0].dep.target.module]
        size = len(g[0].idxs)
        members = []
        for item in g.items:
            dep = item.dep
            mod = dep.target.module
            n = names.get(mod)
            if n is None:
                continue  # torch-pruning's internal ops (add, concat, reshape)
            roots = [int(r) for r in item.root_idxs]
            side = "out" if dg.is_out_channel_pruning_fn(dep.handler) else "in"
            if f"{n}:{side}" in members:
                continue
            if side == "out":
                if not isinstance(mod, MODELLED) and any(True for _ in mod.parameters(recurse=False)):
                    raise UnsupportedModelError(
                        f"unsupported layer {n} ({type(mod).__name__}) is coupled to group {root}; "
                        "its channels cannot be removed exactly (add it to ignored_layers)"
                    )
                out_parts.setdefault(n, []).append((root, roots))
                members.append(f"{n}:out")
            else:
                if isinstance(mod, PRUNABLE) and not _is_depthwise(mod):
                    in_parts.setdefault(n, []).append((root, roots))
                members.append(f"{n}:in")
        groups[root] = Group(root, size, members)
    order = [n for n, m in model.named_modules() if n in groups]
    groups = {n: groups[n] for n in order}

    layers: dict[str, LayerCost] = {}
    modelled_params = 0
    for n, m in model.named_modules():
        if not isinstance(m, MODELLED) or n not in shapes:
            continue
        ishape, oshape = shapes[n]
        kind, kernel, grp = _kind(m)
        out_full = _out_channels(m)
        cin_full = _in_channels(m)
        ins = [] if kind in ("norm", "depthwise") else in_parts.get(n, [])
        if kind == "convT":
            spatial = _numel(ishape[2:])
        elif kind == "linear":
            spatial = _numel(oshape[1:-1])
        else:
            spatial = _numel(oshape[2:])
        lc = LayerCost(n, kind, out_full, out_parts.get(n, []), cin_full, ins, kernel, spatial, _has_bias(m), grp)
        layers[n] = lc
        modelled_params += sum(p.numel() for p in m.parameters(recurse=False))
    const = sum(p.numel() for p in model.parameters()) - modelled_params

    branches: dict[str, Branch] = {}
    for n, m in model.named_modules():
        if isinstance(m, Residual) and m.droppable:
            inner = [f"{n}.branch.{sub}" if sub else f"{n}.branch" for sub, _ in m.branch.named_modules()]
            branches[n] = Branch(n, [x for x in inner if x in layers])

    graph = ModelGraph(groups, branches, layers, const, ignored, dg, modules)
    full = graph.full_keep()
    base = graph.cost(full)
    for g in groups.values():
        less = dict(full, **{g.name: g.size - 1})
        c = graph.cost(less)
        g.params_per_channel = base["params"] - c["params"]
        g.macs_per_channel = base["macs"] - c["macs"]
    for b in branches.values():
        c = graph.cost(full, [b.name])
        b.params, b.macs = base["params"] - c["params"], base["macs"] - c["macs"]
    real = sum(p.numel() for p in model.parameters())
    if strict and base["params"] != real:  # the table must describe the model exactly
        raise UnsupportedModelError(
            f"cost table mismatch: modelled {base['params']} parameters, model has {real}; "
            "a layer with an unusual weight layout is involved"
        )
    return graph


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _kind(m: nn.Module) -> tuple[str, int, int]:
    if isinstance(m, NORMS):
        return "norm", 1, 1
    if isinstance(m, nn.Linear):
        return "linear", 1, 1
    kernel = _numel(m.kernel_size)
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        return "convT", kernel, m.groups
    if _is_depthwise(m):
        return "depthwise", kernel, m.groups
    return "conv", kernel, m.groups


def _out_channels(m: nn.Module) -> int:
    if isinstance(m, NORMS):
        return m.num_features
    if isinstance(m, nn.Linear):
        return m.out_features
    return m.out_channels


def _in_channels(m: nn.Module) -> int:
    if isinstance(m, NORMS):
        return m.num_features
    if isinstance(m, nn.Linear):
        return m.in_features
    return m.in_channels


def _has_bias(m: nn.Module) -> bool:
    """Conv/linear: has a bias vector. Norm: is affine (weight + bias)."""
    if isinstance(m, NORMS):
        return bool(m.affine)
    return getattr(m, "bias", None) is not None


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
