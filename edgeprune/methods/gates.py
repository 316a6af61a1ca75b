"""Gating as a reusable layer: any method that learns which channels / residual branches to keep.

* **gate distributions** (:data:`GATES`): small classes mapping a learned parameter per node to a
  training-time sample, a test-time value and the probability that the node is kept:
  ``hard-concrete`` (Louizos, Welling & Kingma 2018; exact zeros with positive probability),
  ``sigmoid-st`` (a logistic-noise threshold with a straight-through sigmoid gradient) and
  ``bernoulli-st`` (ξ ~ Bernoulli(π) with the straight-through estimator dξ/dπ = 1, π a probability
  (projected onto [0, 1]) or a logit; Guenter & Sideris' complexity-aware pruning scales units and
  layers by such variables);
* :class:`GatedModel`: the model with one gate per channel of every coupled group, applied where the
  channels are consumed (:class:`~edgeprune.surgery.masking.ChannelMasks`: a gate of exactly 0 *is* the
  removed channel), and optionally one per droppable residual branch
  (:class:`~edgeprune.surgery.masking.BranchScales`); its expected MACs under the gates' keep
  probabilities are exact (:class:`~edgeprune.methods.gating.ExpectedCost`);
* from gates to a static network: :meth:`GatedModel.fold_` bakes gate values into the weights (channels
  at their consumers, branch scales through the branch's last layer), :func:`recalibrate_bn`
  re-estimates batch-norm statistics of the static network, :class:`StaticView` evaluates it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ..surgery import branch_output_module
from ..surgery.masking import BranchScales, ChannelMasks
from .gating import ExpectedCost, hc_deterministic, hc_prob_open, hc_sample


class GateDistribution:
    """One gate per entry of a parameter tensor ``theta``."""

    name = "base"

    def sample(self, theta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def deterministic(self, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prob_open(self, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def project_(self, theta: torch.Tensor) -> None:
        """Keep ``theta`` in its domain after an optimizer step (default: unconstrained)."""


class HardConcrete(GateDistribution):
    """Stretched, clamped binary-concrete gates on a logit ``log α`` (temperature β)."""

    name = "hard-concrete"

    def __init__(self, temperature: float = 2.0 / 3.0):
        self.beta = float(temperature)

    def sample(self, theta, generator=None):
        return hc_sample(theta, self.beta, generator)

    def deterministic(self, theta):
        return hc_deterministic(theta)

    def prob_open(self, theta):
        return hc_prob_open(theta, self.beta)


class SigmoidST(GateDistribution):
    """Hard 0/1 gates ``[θ + L > 0]`` with logistic noise L; gradient of ``sigmoid((θ + L) / T)`` (straight-through)."""

    name = "sigmoid-st"

    def __init__(self, temperature: float = 1.0):
        self.t = float(temperature)

    def sample(self, theta, generator=None):
        u = torch.rand(theta.shape, generator=generator, dtype=theta.dtype).clamp(1e-6, 1 - 1e-6)
        soft = torch.sigmoid((theta + torch.log(u) - torch.log1p(-u)) / self.t)
        hard = (soft > 0.5).to(theta.dtype)
        return hard + soft - soft.detach()

    def deterministic(self, theta):
        return (theta > 0).to(theta.dtype)

    def prob_open(self, theta):
        return torch.sigmoid(theta)  # P(θ + L > 0) for standard logistic L


class BernoulliST(GateDistribution):
    """ξ ~ Bernoulli(π) with the straight-through gradient dξ/dπ = 1.

    ``param="prob"``: θ is π itself, projected onto [0, 1] after each step (:meth:`project_`);
    ``param="logit"``: π = sigmoid(θ)."""

    name = "bernoulli-st"

    def __init__(self, param: str = "prob"):
        if param not in ("prob", "logit"):
            raise ValueError(f"bernoulli-st param must be 'prob' or 'logit', got {param!r}")
        self.param = param

    def prob_open(self, theta):
        return theta.clamp(0.0, 1.0) if self.param == "prob" else torch.sigmoid(theta)

    def sample(self, theta, generator=None):
        p = self.prob_open(theta)
        xi = (torch.rand(theta.shape, generator=generator, dtype=theta.dtype) < p.detach()).to(theta.dtype)
        return xi + p - p.detach()

    def deterministic(self, theta):
        return (self.prob_open(theta) >= 0.5).to(theta.dtype)

    def project_(self, theta):
        if self.param == "prob":
            with torch.no_grad():
                theta.clamp_(0.0, 1.0)


GATES: dict[str, type[GateDistribution]] = {c.name: c for c in (HardConcrete, SigmoidST, BernoulliST)}


def get_gate(name: str, **kwargs) -> GateDistribution:
    try:
        return GATES[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown gate distribution {name!r}; choose one of {sorted(GATES)}") from None


class GatedModel(nn.Module):
    """``model`` with a gate on every channel of every coupled group of ``graph`` and, with
    ``branches``, on every droppable residual branch.

    ``forward(x)`` samples the gates in training mode (from ``self.generator`` when set, so a
    training loop can share its random stream) and uses the test-time gate values in eval mode;
    the last sample is kept in ``self.last`` for loss terms that need it. :meth:`run` takes
    explicit gate values (0 = node removed).
    """

    def __init__(self, model: nn.Module, graph, *, gate: GateDistribution | None = None, branches=True,
                 init: float = 3.0):
        super().__init__()
        self.model = model
        self.graph = graph
        self.gate = gate or HardConcrete()
        self.masks = ChannelMasks(model, graph)
        self.logits = nn.Parameter(torch.full((self.masks.n,), float(init)))
        self.branch_names = list(graph.branches) if branches is True else list(branches or [])
        self.branch_logits = nn.Parameter(torch.full((len(self.branch_names),), float(init)))
        self.scales = BranchScales(model, self.branch_names)
        self.cost = ExpectedCost(graph, self.masks.offsets, self.branch_names)
        self.generator: torch.Generator | None = None
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None

    # gates ---------------------------------------------------------------
    def gate_parameters(self) -> list[nn.Parameter]:
        return [self.logits, self.branch_logits]

    def sample(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gate.sample(self.logits, generator), self.gate.sample(self.branch_logits, generator)

    def deterministic(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gate.deterministic(self.logits), self.gate.deterministic(self.branch_logits)

    def probs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gate.prob_open(self.logits), self.gate.prob_open(self.branch_logits)

    def project_(self) -> None:
        for p in self.gate_parameters():
            self.gate.project_(p)

    def expected_macs(self) -> torch.Tensor:
        """Exact E[MACs] of the compact model under the gates' keep probabilities (differentiable)."""
        return self.cost(*self.probs())

    # forward -------------------------------------------------------------
    def run(self, x: torch.Tensor, z: torch.Tensor, zb: torch.Tensor, params: dict | None = None) -> torch.Tensor:
        params = params if params is not None else dict(self.model.named_parameters())
        self.scales.values = dict(zip(self.branch_names, zb))
        try:
            return functional_call(self.model, {**params, **self.masks.effective_weights(params, z)}, (x,))
        finally:
            self.scales.values = {}

    def forward(self, x):
        if self.training:
            z, zb = self.sample(self.generator)
            self.last = (z, zb)
        else:
            z, zb = self.deterministic()
        return self.run(x, z, zb)

    # to a static network -------------------------------------------------
    @torch.no_grad()
    def fold_(self, z: torch.Tensor, zb: torch.Tensor, dropped=()) -> list[str]:
        """Bake channel gates ``z`` into the consumer weights and branch gates ``zb`` into each kept
        branch's last layer, in place; returns the branches whose scale could not be folded."""
        self.masks.fold_(self.model, z)
        unfolded = []
        for b, s in zip(self.branch_names, zb.tolist()):
            if b not in dropped and s != 1.0 and not fold_branch_scale(self.model.get_submodule(b), s):
                unfolded.append(b)
        return unfolded

    def close(self) -> None:
        """Detach the branch hooks from the wrapped model."""
        self.scales.remove()


class StaticView(nn.Module):
    """A gated model with fixed gates (e.g. the static plan's 0/1), for evaluation."""

    def __init__(self, net: GatedModel, keep: torch.Tensor, keep_b: torch.Tensor):
        super().__init__()
        self.net = net
        self.keep, self.keep_b = keep, keep_b

    def forward(self, x):
        return self.net.run(x, self.keep, self.keep_b)


@torch.no_grad()
def recalibrate_bn(net: GatedModel, x: torch.Tensor, keep: torch.Tensor, keep_b: torch.Tensor, batch: int = 256) -> None:
    """Re-estimate the batch-norm running statistics of the network with fixed gates (cumulative average)."""
    recalibrate_batchnorm(net.model, lambda xb: net.run(xb, keep, keep_b), x, batch)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, forward, x, batch: int = 256) -> None:
    """Reset ``model``'s batch-norm running statistics and re-estimate them as a cumulative average over ``x``
    (a tensor or array) by calling ``forward(batch)`` in training mode; ``model`` ends in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or len(x) == 0:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for i in range(0, len(x), batch):
            forward(torch.as_tensor(x[i : i + batch]))
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.eval()


@torch.no_grad()
def fold_branch_scale(block: nn.Module, s: float) -> bool:
    """Scale a residual branch's output by ``s`` through its last layer (BN / conv / linear)."""
    leaves = [m for m in branch_output_module(block).modules() if not list(m.children())]
    last = leaves[-1] if leaves else None
    if isinstance(last, nn.modules.batchnorm._BatchNorm) and last.affine:
        last.weight.mul_(s)
        last.bias.mul_(s)
        return True
    if isinstance(last, (nn.Linear, nn.modules.conv._ConvNd)):
        last.weight.mul_(s)
        if last.bias is not None:
            last.bias.mul_(s)
        return True
    return False


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


__all__ = ["GATES", "BernoulliST", "GateDistribution", "GatedModel", "HardConcrete", "SigmoidST", "StaticView",
           "fold_branch_scale", "get_gate", "has_batchnorm", "recalibrate_batchnorm", "recalibrate_bn"]
