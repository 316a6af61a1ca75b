"""Soft channel masking of coupled groups, applied where the channels are consumed.

:func:`~edgeprune.surgery.compact.masked` is the reference of what removing a group's
channels means: the removed channels are zeroed in the *input slices of every layer that
consumes them* (next convs / linears, through residual adds, concat offsets and
flatten -> linear expansion). :class:`ChannelMasks` does the same with a continuous mask
``z`` per channel: the effective weight of every consumer is ``W * z[src]`` along its input
dimension, where ``src`` maps each consumer input index to the group channel that feeds it
(read from Torch-Pruning's root-index mapping). Therefore

* ``z == 1`` is the unchanged model, ``z == 0`` is *exactly* the model with the channel
  removed (no BN bias, PReLU, layer scale, ReLU6 or sigmoid leaks through: the channel is cut
  at its consumers, after every elementwise op of its producer) -- except where the group
  passes a LayerNorm, whose statistics still include the masked channels (the compaction's
  reference normalizes over the kept ones: ``compact.KeptStatsLayerNorm``);
* gradients flow to ``z`` (and to whatever produces it) through the consumers' weights;
* masking a weight costs one multiply per weight, not per activation, so a masked
  forward costs about the same as the plain one.

Droppable residual branches (a :class:`~edgeprune.models.Residual` with an identity
shortcut, or a traced ``post(x + f(x))`` block, see ``branches.py``) can be scaled as a whole
by :class:`BranchScales`: ``post(x + s * f(x))``; ``s == 0`` is exactly the dropped branch
(``post(x)``).
"""

from __future__ import annotations

import torch
from torch import nn

from .branches import branch_output_module
from .graph import ModelGraph, _is_depthwise, tolerant_reshape_mapping
from .layout import column_of

_CONSUMERS = (nn.Linear, nn.modules.conv._ConvNd)


class ChannelMasks:
    """Map a concatenated per-channel mask vector onto consumer weights.

    ``groups`` (default: all groups of ``graph``) fixes the order of the concatenated mask
    vector: group ``g`` occupies ``offsets[g] : offsets[g] + sizes[g]``.
    """

    def __init__(self, model: nn.Module, graph: ModelGraph, groups: list[str] | None = None):
        self.groups = list(groups if groups is not None else graph.groups)
        self.sizes = {g: graph.groups[g].size for g in self.groups}
        self.offsets: dict[str, int] = {}
        n = 0
        for g in self.groups:
            self.offsets[g] = n
            n += self.sizes[g]
        self.n = n
        modules = dict(model.named_modules())
        dg = graph._tp_graph
        if dg is None or not graph._modules:
            raise ValueError("graph has no dependency graph (build it with edgeprune.surgery.analyze)")
        # Torch-Pruning's graph was built on the analysed model object (maybe not ``model``
        # itself, e.g. a copy of it): go through layer names.
        dg_names = {mod: n_ for n_, mod in graph._modules.items()}
        # consumer layer name -> index into [1, z_0, z_1, ...] for each of its input channels
        src: dict[str, torch.Tensor] = {}
        for g in self.groups:
            root = graph._modules[g]
            handler = dg.get_pruner_of_module(root).prune_out_channels
            with tolerant_reshape_mapping():
                tp_group = dg.get_pruning_group(root, handler, list(range(self.sizes[g])))
            for item in tp_group:
                dep, idxs, roots = item.dep, item.idxs, item.root_idxs
                mod = dep.target.module
                if dg.is_out_channel_pruning_fn(dep.handler) or not isinstance(mod, _CONSUMERS):
                    continue
                if _is_depthwise(mod):
                    continue  # depthwise: in == out are coupled, its consumer is masked instead
                # (analyze freezes every group that touches a grouped, non-depthwise conv)
                name = dg_names.get(mod)
                if name is None or name not in modules:
                    continue
                cin = _in_features(modules[name])
                s = src.setdefault(name, torch.zeros(cin, dtype=torch.long))
                ix = torch.as_tensor([int(i) for i in idxs])
                if name in graph.remaps:  # channel-first index -> the column after the channels-last flatten
                    ix = column_of(graph.remaps[name], ix)
                s[ix] = 1 + self.offsets[g] + torch.as_tensor([int(r) for r in roots])
        self.src = src
        self.kinds = {name: _kind(modules[name]) for name in src}

    # ------------------------------------------------------------------ apply
    def _weight_mask(self, name: str, z_ext: torch.Tensor, ndim: int) -> torch.Tensor:
        m = z_ext[self.src[name]]
        shape = [1] * ndim
        if self.kinds[name] == "convT":
            shape[0] = -1  # weight (in, out/groups, k...)
        else:
            shape[1] = -1  # weight (out, in, k...)
        return m.view(shape)

    def extend(self, z: torch.Tensor) -> torch.Tensor:
        """``[1, z]``: index 0 is the constant 1 of inputs that belong to no masked group."""
        if z.shape != (self.n,):
            raise ValueError(f"mask vector has shape {tuple(z.shape)}, expected ({self.n},)")
        return torch.cat([z.new_ones(1), z])

    def effective_weights(self, params: dict[str, torch.Tensor], z: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"<consumer>.weight": W * z[src]}`` for :func:`torch.func.functional_call`."""
        z_ext = self.extend(z)
        out = {}
        for name in self.src:
            w = params[f"{name}.weight"]
            out[f"{name}.weight"] = w * self._weight_mask(name, z_ext, w.dim())
        return out

    @torch.no_grad()
    def fold_(self, model: nn.Module, z: torch.Tensor) -> None:
        """Bake the mask into the consumer weights in place (the model then computes the masked net)."""
        z_ext = self.extend(z.detach().to(torch.float32))
        for name in self.src:
            w = model.get_submodule(name).weight
            w.mul_(self._weight_mask(name, z_ext, w.dim()).to(w.dtype))

    def split(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The concatenated vector as ``{group: per-channel tensor}``."""
        return {g: z[self.offsets[g] : self.offsets[g] + self.sizes[g]] for g in self.groups}

    def concat(self, per_group: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([torch.as_tensor(per_group[g], dtype=torch.float32).reshape(-1) for g in self.groups])


class BranchScales:
    """Forward hooks scaling whole residual branches: ``post(x + s_b * f(x))``.

    The hook sits on the module whose output is ``f(x)``
    (:func:`~edgeprune.surgery.branches.branch_output_module`: ``block.branch`` for a Residual).

    Set ``values`` (``{block name: scalar tensor}``) before a forward; blocks absent from
    it are not scaled. ``remove()`` detaches the hooks.
    """

    def __init__(self, model: nn.Module, names: list[str]):
        self.names = list(names)
        self.values: dict[str, torch.Tensor] = {}
        self._handles = []
        for n in self.names:
            out = branch_output_module(model.get_submodule(n))
            self._handles.append(out.register_forward_hook(self._hook(n)))

    def _hook(self, name: str):
        def fn(mod, inputs, output):
            s = self.values.get(name)
            return output if s is None else output * s

        return fn

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _in_features(m: nn.Module) -> int:
    return m.in_features if isinstance(m, nn.Linear) else m.in_channels


def _kind(m: nn.Module) -> str:
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        return "convT"
    return "linear" if isinstance(m, nn.Linear) else "conv"
