"""Magnitude baselines: keep the channels whose weights have the largest L1 / L2 norm.

Each group's channel score is the norm of every weight slice the channel owns across the
group (the producing layers' output filters), as Torch-Pruning's group-magnitude
importance does; every group keeps the same fraction of its channels, found by bisection
so that the compact model keeps at most the requested fraction of MACs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..surgery import plan_from_scores
from .base import FitContext, MethodResult, PruningMethod, register_method, uniform_widths


def group_scores(model: nn.Module, graph, p: int = 1) -> dict[str, np.ndarray]:
    modules = dict(model.named_modules())
    scores = {}
    for g in graph.groups.values():
        s = torch.zeros(g.size, dtype=torch.float64)
        for member in g.members:
            name, _, side = member.rpartition(":")
            mod = modules[name]
            w = getattr(mod, "weight", None)
            if side != "out" or w is None or isinstance(mod, nn.modules.batchnorm._BatchNorm):
                continue
            w = w.detach().double()
            if isinstance(mod, nn.modules.conv._ConvTransposeNd):
                w = w.transpose(0, 1)
            s += w.abs().pow(p).reshape(w.shape[0], -1).sum(1)
        scores[g.name] = s.numpy()
    return scores


class _Magnitude(PruningMethod):
    norm = 1

    def fit(self, model: nn.Module, ctx: FitContext) -> MethodResult:
        widths = uniform_widths(ctx.graph, ctx.flops_keep, ctx.width_multiple)
        plan = plan_from_scores(
            ctx.graph, group_scores(model, ctx.graph, self.norm), widths,
            width_multiple=ctx.width_multiple, method=self.name, meta={"flops_keep": ctx.flops_keep},
        )
        return MethodResult(plan, model)


@register_method("l1")
class L1Magnitude(_Magnitude):
    summary = "uniform per-group L1-norm channel pruning of the trained dense model (baseline)"
    norm = 1


@register_method("l2")
class L2Magnitude(_Magnitude):
    summary = "uniform per-group L2-norm channel pruning of the trained dense model (baseline)"
    norm = 2
