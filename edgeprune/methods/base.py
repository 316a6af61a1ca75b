"""The pruning-method interface and its registry.

A method gets the dense model (already trained by the pipeline), the normalised data, the
model's :class:`~edgeprune.surgery.ModelGraph` and the budget, and returns a
:class:`MethodResult`: a :class:`~edgeprune.surgery.PruningPlan` plus the weights the plan
applies to (methods that train, such as ``pl-gates``, return their own trained weights).
Methods never cut modules: the surgery stage does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..surgery import ModelGraph, PruningPlan, round_width

METHODS: dict[str, type["PruningMethod"]] = {}


def register_method(name: str):
    def deco(cls):
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def list_methods() -> list[str]:
    return sorted(METHODS)


def get_method(name: str, options: dict | None = None) -> "PruningMethod":
    try:
        cls = METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; choose one of {list_methods()}") from None
    return cls(**(options or {}))


@dataclass
class FitContext:
    """Everything a method may use. Arrays are normalised float32 (N, C, H, W)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    example: torch.Tensor
    graph: ModelGraph
    task: str
    flops_keep: float  # fraction of dense MACs to keep
    width_multiple: int
    seed: int
    train_options: dict  # epochs, batch_size, lr, weight_decay of the run
    progress: Callable[[str, int, int], None] | None = None  # (label, done, total)
    log: Callable[[str], None] = print


@dataclass
class MethodResult:
    plan: PruningPlan
    model: nn.Module  # the weights the plan applies to
    history: dict = field(default_factory=dict)  # curves for the report (kappa, gate rates, ...)


class PruningMethod:
    name = "base"
    summary = ""
    trains_from_scratch = False  # True: ignores the dense weights and trains its own model

    def __init__(self, **options):
        if options:
            raise ConfigError(f"method {self.name!r} takes no option(s) {sorted(options)}")

    def fit(self, model: nn.Module, ctx: FitContext) -> MethodResult:  # pragma: no cover - interface
        raise NotImplementedError

    def own_epochs(self, train_options: dict) -> int:
        """Epochs of training the method itself runs in :meth:`fit` (0: it only scores the given weights).

        Benchmarks use it to give every method the same total epoch budget."""
        return 0


def uniform_widths(graph: ModelGraph, flops_keep: float, width_multiple: int, dropped=()) -> dict[str, int]:
    """Largest uniform keep-ratio whose rounded widths keep at most ``flops_keep`` of dense MACs.

    Bisection on the ratio: MACs are monotone in every width. If even one channel per group
    (rounded) exceeds the budget, the smallest widths are returned; the pipeline reports it.
    """
    dense = graph.dense_cost()["macs"]
    goal = flops_keep * dense

    def widths(r: float) -> dict[str, int]:
        return {g.name: round_width(max(1, int(np.floor(r * g.size))), width_multiple, g.size) for g in graph.groups.values()}

    lo, hi = 0.0, 1.0
    if graph.cost(widths(1.0), dropped)["macs"] <= goal:
        return widths(1.0)
    for _ in range(40):
        mid = (lo + hi) / 2
        if graph.cost(widths(mid), dropped)["macs"] <= goal:
            lo = mid
        else:
            hi = mid
    return widths(lo)
