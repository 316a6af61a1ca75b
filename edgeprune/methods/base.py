"""The pruning-method interface and its registry.

A method gets the dense model (already trained by the pipeline), the normalised data, the
model's :class:`~edgeprune.surgery.ModelGraph` and the budget, and returns a
:class:`MethodResult`: a :class:`~edgeprune.surgery.PruningPlan` plus the weights the plan
applies to (methods that train, such as ``pl-gates``, return their own trained weights).
Methods never cut modules: the surgery stage does.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..surgery import ModelGraph, PruningPlan, round_width
from .options import NoOptions, build_options, describe_options, to_dict

METHODS: dict[str, type["PruningMethod"]] = {}


def register_method(name: str):
    def deco(cls):
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def list_methods() -> list[str]:
    return sorted(METHODS)


def method_class(name: str) -> type["PruningMethod"]:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; choose one of {list_methods()}") from None


def get_method(name: str, options: dict | None = None) -> "PruningMethod":
    """The registered method ``name`` with its options validated against its ``options_cls``."""
    return method_class(name)(**(options or {}))


def method_info(name: str) -> dict:
    """What `edgeprune methods` and the docs show: summary, whether it trains, options with defaults and help."""
    cls = method_class(name)
    return {"name": name, "summary": cls.summary, "trains": cls.does_train(),
            "trains_from_scratch": bool(cls.trains_from_scratch), "options": describe_options(cls.options_cls)}


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
    metric: str | None = None  # the run's metric (a registered name or file.py:function); None: the task's
    target: Any = None  # the run's target profile (a Target) where a method weighs costs on it; None outside build

    def run_option(self, key: str):
        """A training option of the run (``epochs``, ``finetune_epochs``, ``batch_size``, ``lr``, ``weight_decay``):
        the config holds the one default, so a missing key is an error, not a second default."""
        try:
            return self.train_options[key]
        except KeyError:
            raise ConfigError(f"FitContext.train_options has no {key!r}; pass the run's training options "
                              f"(epochs, batch_size, lr, weight_decay)") from None

    def train(self, model: nn.Module, hooks=(), **overrides) -> Any:
        """Train ``model`` in place with the ONE training loop (:func:`edgeprune.train.train`) on the run's
        training data, plugging in ``hooks``; ``overrides`` (epochs, lr, batch_size, val, label, ...) replace
        the run's training options. Returns the loop's :class:`~edgeprune.train.History`."""
        from ..train import train

        opts = {k: self.run_option(k) for k in ("epochs", "batch_size", "lr", "weight_decay") if k not in overrides}
        opts.update(seed=self.seed, task=self.task, metric=self.metric)
        label = overrides.pop("label", "training")
        if self.progress and "on_step" not in overrides:
            overrides["on_step"] = lambda s, t: self.progress(label, s, t)
        opts.update(overrides)
        return train(model, self.x_train, self.y_train, hooks=hooks, **opts)


@dataclass
class MethodResult:
    plan: PruningPlan
    model: nn.Module  # the weights the plan applies to
    history: dict = field(default_factory=dict)  # curves for the report (kappa, gate rates, ...)
    # numeric counters the benchmark harness records per row (e.g. {"metric_evaluations": 30}); see compare.tables
    extras: dict = field(default_factory=dict)


class PruningMethod:
    """A pruning method: registered by name (:func:`register_method`), options declared once in
    ``options_cls`` (a dataclass, see :mod:`edgeprune.methods.options`), ``fit`` returns a plan.

    The base class validates the options into ``self.opts``; a subclass needs no ``__init__``.
    Methods that train plug a hook into :func:`edgeprune.train.train` (``ctx.train(model, hook)``)
    instead of keeping an epoch loop of their own.
    """

    name = "base"
    summary = ""
    options_cls: type = NoOptions
    trains = False  # True: fit() trains (weights, gates, coefficients); `edgeprune methods` shows it
    trains_from_scratch = False  # True: ignores the dense weights and trains its own model
    plots: dict | None = None  # how the report draws history curves (history["plots"] wins; docs/methods/README.md)

    def __init__(self, **options):
        self.opts = build_options(self.options_cls, options, self.name)

    @property
    def options(self) -> dict:
        """The validated options as a plain dict (JSON-ready)."""
        return self.__dict__.get("_options") or to_dict(getattr(self, "opts", None))

    @options.setter
    def options(self, value: dict) -> None:  # methods written before options_cls may still assign a dict
        self._options = dict(value)

    @classmethod
    def quick_options(cls) -> dict:
        """Options for a quick run on a small model (the contract test: a few seconds on digits)."""
        return {}

    @classmethod
    def does_train(cls) -> bool:
        return bool(cls.trains) or cls.own_epochs is not PruningMethod.own_epochs

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


def jsonable(x):
    """``x`` with tensors, numpy scalars and non-finite floats turned into JSON values (for histories)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def working_copy(model: nn.Module, *, reinitialise: bool = False, seed: int = 0) -> nn.Module:
    """A copy of ``model`` for a method to train; ``reinitialise``: every layer's ``reset_parameters()`` under
    ``seed`` (the from-scratch protocol), leaving the global random state as it was."""
    import copy

    model = copy.deepcopy(model)
    if reinitialise:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for m in model.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
    return model
