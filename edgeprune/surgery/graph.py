"""Coupled-channel groups, droppable residual branches and an exact cost table.

Torch-Pruning's ``DependencyGraph`` does the coupling analysis (which output channels of
which layers must be removed together: residual adds, concat slices, depthwise convs,
flatten -> linear, transposed convs). This module wraps it in edgeprune types:

* :class:`Group` -- a named set of coupled channels (named after its root layer) with its
  channel count and what one channel costs in parameters and MACs;
* :class:`Branch` -- a residual branch ``y = post(x + f(x))`` that can be dropped whole
  (a :class:`~edgeprune.models.Residual`, or a user block traced to that form: ``branches.py``);
* :class:`ModelGraph` -- both, plus a per-layer cost table that predicts the exact
  parameter count and MACs of the compact model for any kept widths and dropped branches,
  without building it (methods use it to meet FLOPs budgets).

What is kept whole, and what is refused (:func:`analyze`):

* every layer whose output channels reach a model output (found on the autograd graph of
  the outputs), and the producers of layers that run but reach no output;
* every group whose channels feed or come out of a grouped, non-depthwise convolution,
  every group that is both concatenated and flattened, and every group that passes a layer
  with parameters the surgery does not cut (``nn.MultiheadAttention``, ``GroupNorm``, ...):
  ``ModelGraph.frozen`` says why;
* refused with :class:`UnsupportedModelError` naming the op and its module: custom
  autograd Functions, ops between layers that do not keep channel ``i`` as channel ``i``
  (``support.py``), and shapes hard-coded in ``forward`` (the probe compaction).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from ..errors import UnsupportedModelError
from ..models import Residual
from .branches import dropped_block, find_branch
from .layout import find_remaps
from .rewrite import find_hard_coded
from .support import (
    all_groups, check_bare_parameter, check_group_ops, likely_cause, merges_channels, raised_in_torch_pruning,
    stop_at_relayouts,
)
from .trace import OpRecorder

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
PER_CHANNEL = (nn.PReLU, nn.LayerNorm)  # per-channel parameters (a LayerNorm: over its last dimension)
# Modules whose parameters the cost table models exactly; anything else with parameters
# is counted as a constant and refused if it sits inside a group.
MODELLED = PRUNABLE + NORMS + PER_CHANNEL


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
    name: str  # module name of the residual block
    layers: list[str]  # prunable/norm layers inside the branch
    params: int = 0
    macs: int = 0
    output: str = ""  # module whose output is the branch's contribution f(x) (scale it to scale the branch)
    const_params: int = 0  # parameters of the branch the cost table does not model (they leave with it)
    modules: list[str] = field(default_factory=list)  # the child modules that compute f(x)

    def contains(self, name: str) -> bool:
        """Whether module ``name`` is part of this branch (and leaves with it)."""
        return any(name == p or name.startswith(p + ".") for p in self.modules)

    def to_dict(self) -> dict:
        return {"name": self.name, "params": self.params, "macs": self.macs, "output": self.output}


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
    kind: str  # conv | depthwise | convT | linear | norm | channel (PReLU, a bare per-channel parameter)
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
        if self.kind == "channel":  # ``kernel`` entries per channel (a (C, 1, 1) scale: 1; a (1, N, C) embedding: N)
            return out * self.kernel, 0
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
    ignored: list[str] = field(default_factory=list)  # layers whose output channels stay
    _tp_graph: object = None  # the torch_pruning DependencyGraph (not serialised)
    _modules: dict = field(default_factory=dict)
    frozen: dict[str, str] = field(default_factory=dict)  # coupled groups kept whole: root layer -> why
    remaps: dict = field(default_factory=dict)  # Linear after a channels-last flatten -> its Remap (layout.py)
    rewrites: list = field(default_factory=list)  # hard-coded flatten widths rewritten by compact (rewrite.py)

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

    def outermost(self, dropped) -> list[str]:
        """``dropped`` without the blocks that sit inside another dropped branch (they leave with it)."""
        dropped = list(dict.fromkeys(dropped))
        return [b for b in dropped if not any(self.branches[o].contains(b) for o in dropped if o != b)]

    def _sum(self, layer_cost, dropped) -> dict[str, int]:
        dropped = self.outermost(dropped)
        skip = {layer for b in dropped for layer in self.branches[b].layers}
        params = self.const_params - sum(self.branches[b].const_params for b in dropped)
        macs = 0
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
            "frozen": self.frozen,
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


def build_tp_graph(model: nn.Module, example: torch.Tensor):
    """Torch-Pruning's dependency graph of ``model``, traced by one call ``model(example)``.

    (Without ``forward_fn`` Torch-Pruning first tries ``model(*example)``: a batch-1 tensor
    is unpacked along the batch dimension and traced as an unbatched input.)
    """
    with tolerant_reshape_mapping():
        return tp.DependencyGraph().build_dependency(model, example_inputs=example, forward_fn=_call, verbose=False)


@contextmanager
def tolerant_reshape_mapping():
    """Torch-Pruning 1.6.1 divides by zero mapping a channel shuffle's reshape (ShuffleNetV2); that reshape then
    keeps its identity mapping, and the op check keeps every group through it whole (support.py). Inside, each
    dependency graph computes its index mappings once, not at every ``get_pruning_group``: nothing is cut in a graph
    while its groups are read (compaction cuts a copy: ``compact.plan_cuts``)."""
    from torch_pruning.dependency import index_mapping

    original, update = index_mapping.update_reshape_index_mapping, index_mapping.update_index_mapping
    real = getattr(update, "real", update)  # nested: this context computes once per graph again
    done: set = set()

    def tolerant(graph, node):
        try:
            original(graph, node)
        except ZeroDivisionError:
            pass

    def once(graph):  # every get_pruning_group recomputes all mappings; nothing is cut in this graph meanwhile
        if id(graph) not in done:
            real(graph)
            done.add(id(graph))

    once.real = real
    index_mapping.update_reshape_index_mapping, index_mapping.update_index_mapping = tolerant, once
    try:
        yield
    finally:
        index_mapping.update_reshape_index_mapping, index_mapping.update_index_mapping = original, update


def _call(model: nn.Module, example: torch.Tensor):
    return model(example)


def analyze_graph(
    model: nn.Module, example: torch.Tensor, ignored_layers: list[str] | None = None, *, strict: bool = True,
) -> ModelGraph:
    """:func:`~edgeprune.surgery.analysis.analyze` without the compaction probe (what compaction itself uses)."""
    was_training = model.training
    model.eval()
    try:
        with one_thread(), tolerant_reshape_mapping():
            try:
                return _analyze(model, example, ignored_layers, strict)
            except UnsupportedModelError:
                raise
            except Exception as e:  # noqa: BLE001 - Torch-Pruning's own failures become a refusal
                if not raised_in_torch_pruning(e):
                    raise
                raise UnsupportedModelError(f"Torch-Pruning fails on the model's channel dependencies "
                                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); the "
                                            "model uses a pattern edgeprune does not cut (keep those layers in "
                                            "ignored_layers)") from None
    finally:
        model.train(was_training)


def _analyze(model, example, ignored_layers, strict) -> ModelGraph:
    names = {m: n for n, m in model.named_modules()}
    modules = dict(model.named_modules())
    for n in ignored_layers or []:
        if n not in modules:
            raise UnsupportedModelError(f"ignored layer {n!r} is not a module of the model")
    rec = OpRecorder(model, PRUNABLE)
    try:
        with rec.recording(), torch.enable_grad():
            dg = build_tp_graph(model, example)  # its tracing forward is the recorded one
    except Exception as e:  # noqa: BLE001 - torch-pruning's own failures are bare errors
        err = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if not rec.outputs:  # the model's own forward failed
            op, where = rec.failed_op or ("", rec.stack[-1] if rec.stack else "")
            at = f" at op {op}" if op else ""
            raise UnsupportedModelError(f"the model's forward fails on the example input of shape "
                                        f"{tuple(example.shape)}{at} in {rec.where(where)}: {err}") from None
        _refuse_custom_functions(rec)
        raise UnsupportedModelError(f"Torch-Pruning cannot trace the channel dependencies of the model ({err}); "
                                    + likely_cause(rec, modules)) from None
    _refuse_custom_functions(rec)
    remaps = find_remaps(rec, modules)
    accepted = {fn for r in remaps.values() for fn in r.nodes}
    stop_at_relayouts(dg, rec, modules, accepted)
    # layers whose output reaches a model output keep their widths, and so do the producers of
    # layers that run but reach no output (Torch-Pruning's graph, traced back from the outputs,
    # does not see them, so it would not cut their inputs)
    dead = [n for n in rec.layer_in if modules[n] not in dg.module2node]
    feeding_dead = rec.layers_feeding([f for n in dead for f in rec.layer_in[n]])
    ignored = list(dict.fromkeys((ignored_layers or []) + rec.layers_reaching_outputs() + feeding_dead))
    grouped = [n for n, m in modules.items() if _is_grouped(m)]
    shapes = {n: (c.in_shape, c.out_shape) for n, c in rec.calls.items() if isinstance(modules[n], MODELLED)}
    # ignored layers only stop groups from being rooted there; passing them to
    # build_dependency would also freeze their *input* channels and break coupling.
    groups: dict[str, Group] = {}
    out_parts: dict[str, list[tuple[str, list[int]]]] = {}
    in_parts: dict[str, list[tuple[str, list[int]]]] = {}
    frozen: dict[str, str] = {}  # group root -> why its widths stay
    frozen_layers: list[str] = []
    ignored_mods = [modules[n] for n in dict.fromkeys(ignored + grouped)]
    for g in all_groups(dg, ignored_mods, list(PRUNABLE), rec, modules):
        root = names[g[0].dep.target.module]
        found = _group_parts(g, root, dg, names, rec, modules, accepted)
        if isinstance(found, str):  # a pattern whose channels are kept whole
            frozen[root] = found
            frozen_layers.extend(n for n, side, _ in _layer_items(g, dg, names) if side == "out")
            continue
        members, outs, ins = found
        for n, roots in outs:
            out_parts.setdefault(n, []).append((root, roots))
        for n, roots in ins:
            in_parts.setdefault(n, []).append((root, roots))
        groups[root] = Group(root, len(g[0].idxs), members)
    order = [n for n, m in model.named_modules() if n in groups]
    groups = {n: groups[n] for n in order}
    ignored = list(dict.fromkeys(ignored + grouped + frozen_layers))

    layers: dict[str, LayerCost] = {}
    modelled_params = 0
    for n, m in model.named_modules():
        if not isinstance(m, MODELLED) or n not in shapes:
            continue
        ishape, oshape = shapes[n]
        kind, kernel, grp = _kind(m)
        out_full = _out_channels(m)
        cin_full = _in_channels(m)
        ins = [] if kind in ("norm", "depthwise", "channel") else in_parts.get(n, [])
        if kind == "convT":
            spatial = _numel(ishape[2:])
        elif kind == "linear":
            spatial = _numel(oshape[1:-1])
        else:
            spatial = _numel(oshape[2:])
        lc = LayerCost(n, kind, out_full, out_parts.get(n, []), cin_full, ins, kernel, spatial, _has_bias(m), grp)
        layers[n] = lc
        modelled_params += sum(p.numel() for p in m.parameters(recurse=False))
    params = dict(model.named_parameters())
    for n, parts in out_parts.items():
        if n in params and n not in modules:  # a bare per-channel parameter coupled to groups
            p = params[n]
            dim = max(d for d, s in enumerate(p.shape) if s > 1)
            layers[n] = LayerCost(n, "channel", p.shape[dim], parts, p.shape[dim], [], p.numel() // p.shape[dim], 1, False)
            modelled_params += p.numel()
    const = sum(p.numel() for p in model.parameters()) - modelled_params

    branches = _find_branches(model, layers, rec)
    graph = ModelGraph(groups, branches, layers, const, ignored, dg, modules, frozen, remaps, find_hard_coded(rec))
    full = graph.full_keep()
    base = graph.cost(full)
    touching: dict[str, list[LayerCost]] = {}  # a group's channel costs only in the layers it owns channels of
    for lc in layers.values():
        for gname in dict.fromkeys(p[0] for p in lc.out_parts + lc.in_parts):
            touching.setdefault(gname, []).append(lc)
    for g in groups.values():
        less = dict(full, **{g.name: g.size - 1})
        diffs = [(a - c, b - d) for lc in touching.get(g.name, []) for (a, b), (c, d) in [(lc.cost(full, full), lc.cost(less, full))]]
        g.params_per_channel, g.macs_per_channel = sum(d[0] for d in diffs), sum(d[1] for d in diffs)
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


def _refuse_custom_functions(rec: OpRecorder) -> None:
    """The channel analysis cannot see through custom autograd Functions: refuse them by name and module."""
    for fn, info in rec.custom_functions():
        raise UnsupportedModelError(
            f"unsupported op: custom autograd Function {info.op!r} in {rec.where(info.module)}; the channel analysis "
            "cannot see through it; write it with standard torch ops"
        )


def _layer_items(g, dg, names):
    """(layer name, "out"|"in", root indices) of the group's items that are modules of the model."""
    for item in g.items:
        n = names.get(item.dep.target.module) if isinstance(item.dep.target.module, nn.Module) else None
        if n is not None:
            side = "out" if dg.is_out_channel_pruning_fn(item.dep.handler) else "in"
            yield n, side, [int(r) for r in item.root_idxs]


def _group_parts(g, root, dg, names, rec, modules, accepted=frozenset()):
    """``(members, out parts, in parts)`` of one Torch-Pruning group, or why its widths must stay.

    Kept whole: groups that touch a grouped (non-depthwise) conv, and groups that pass both a
    channel concat and a flatten (Torch-Pruning maps concat -> flatten -> linear onto
    overlapping indices). Raises :class:`UnsupportedModelError` if the group's channels pass
    through an op or a layer that cannot be cut exactly.
    """
    members, outs, ins, internal = [], [], [], []
    for item in g.items:
        mod = item.dep.target.module
        if isinstance(mod, nn.Parameter):
            pname = check_bare_parameter(mod, root, dg, rec)
            if f"{pname}:out" not in members:
                outs.append((pname, [int(r) for r in item.root_idxs]))
                members.append(f"{pname}:out")
            continue
        if not isinstance(mod, nn.Module) or mod not in names:
            internal.append(item.dep.target)  # torch-pruning's internal ops (add, concat, reshape, ...)
    for n, side, roots in _layer_items(g, dg, names):
        mod = modules[n]
        if _is_grouped(mod):
            return f"its channels {'come out of' if side == 'out' else 'feed'} grouped convolution {n}"
        if f"{n}:{side}" in members:
            continue
        if side == "out":
            if isinstance(mod, nn.LayerNorm) and (len(mod.normalized_shape) != 1 or layer_norm_dim(mod) is None):
                return (f"its channels pass through {n} ({type(mod).__name__} over {tuple(mod.normalized_shape)}); "
                        "only a LayerNorm over one dimension (nn.LayerNorm, LayerNorm2d) is cut")
            if not isinstance(mod, MODELLED) and any(True for _ in mod.parameters(recurse=False)):
                return f"its channels pass through {n} ({type(mod).__name__}), a layer edgeprune does not cut"
            outs.append((n, roots))
        elif isinstance(mod, PRUNABLE) and not _is_depthwise(mod):
            ins.append((n, roots))
        members.append(f"{n}:{side}")
    split = check_group_ops(root, [n for n in internal if n.grad_fn not in accepted], rec, modules)
    if split:
        return split
    infos = [rec.info.get(node.grad_fn) for node in internal if node.grad_fn is not None]
    if any(i.op == "cat" for i in infos if i) and any(merges_channels(i) for i in infos if i):
        return "its channels are concatenated and flattened (Torch-Pruning cannot map that onto the next layer)"
    return members, outs, ins


def _find_branches(model: nn.Module, layers: dict, rec: OpRecorder) -> dict[str, "Branch"]:
    """Droppable residual branches: :class:`Residual` blocks and traced ``x + f(x)`` blocks (see branches.py)."""
    calls = {n: c.calls for n, c in rec.calls.items()}
    shapes = {n: (c.in_shape, c.out_shape) for n, c in rec.calls.items()}
    out: dict[str, Branch] = {}
    traces: dict = {}
    for n, m in model.named_modules():
        if not n:
            continue
        if isinstance(m, Residual):
            if m.droppable:
                out[n] = _branch(n, f"{n}.branch", m.branch, layers)
            continue
        found = find_branch(m, calls, n, shapes, traces)
        if found is not None:
            subs = [(f"{n}.{t}", m.get_submodule(t)) for t in found.modules]
            out[n] = _branch(n, f"{n}.{found.output}", subs, layers, dropped_params=_count(m) - _count(dropped_block(m, found)))
    return out


def _branch(name: str, output: str, parts, layers: dict, dropped_params: int | None = None) -> "Branch":
    """A Branch over ``parts`` (one module, named ``output``, or a list of (name, module))."""
    parts = [(output, parts)] if isinstance(parts, nn.Module) else parts
    inner = [f"{p}.{sub}" if sub else p for p, mod in parts for sub, _ in mod.named_modules()]
    mine = [x for x in inner if x in layers]
    total = dropped_params if dropped_params is not None else sum(_count(mod) for _, mod in parts)
    modelled = sum(_count(m, recurse=False) for p, mod in parts for sub, m in mod.named_modules()
                   if (f"{p}.{sub}" if sub else p) in layers)
    return Branch(name, mine, output=output, const_params=total - modelled, modules=[p for p, _ in parts])


def _count(m: nn.Module, recurse: bool = True) -> int:
    return sum(p.numel() for p in m.parameters(recurse=recurse))


def layer_norm_dim(m: nn.LayerNorm) -> int | None:
    """The dimension a LayerNorm normalizes: -1 (nn.LayerNorm), 1 (LayerNorm2d of torchvision / timm), else None."""
    if type(m).forward is nn.LayerNorm.forward:
        return -1
    return 1 if type(m).__name__ == "LayerNorm2d" else None


def _is_grouped(m: nn.Module) -> bool:
    """A grouped convolution that is not depthwise (its widths are kept: see the README)."""
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and not _is_depthwise(m)


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _kind(m: nn.Module) -> tuple[str, int, int]:
    if isinstance(m, nn.LayerNorm):  # weight and bias (either may be absent) per channel
        return "channel", (m.weight is not None) + (m.bias is not None), 1
    if isinstance(m, PER_CHANNEL):
        return "channel", 1, 1
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
    if isinstance(m, nn.LayerNorm):
        return m.normalized_shape[-1]
    if isinstance(m, PER_CHANNEL):
        return m.num_parameters
    if isinstance(m, NORMS):
        return m.num_features
    if isinstance(m, nn.Linear):
        return m.out_features
    return m.out_channels


def _in_channels(m: nn.Module) -> int:
    if isinstance(m, nn.LayerNorm):
        return m.normalized_shape[-1]
    if isinstance(m, PER_CHANNEL):
        return m.num_parameters
    if isinstance(m, NORMS):
        return m.num_features
    if isinstance(m, nn.Linear):
        return m.in_features
    return m.in_channels


def _has_bias(m: nn.Module) -> bool:
    """Conv/linear: has a bias vector. Norm: is affine (weight + bias)."""
    if isinstance(m, NORMS):
        return bool(m.affine)
    if isinstance(m, PER_CHANNEL):
        return False
    return getattr(m, "bias", None) is not None


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
