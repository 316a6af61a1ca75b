"""Torch-Pruning's own criteria as edgeprune methods: tp-l1, tp-l2, tp-taylor, tp-groupnorm, tp-random.

Each method runs Torch-Pruning's pruner (``tp.pruner.MetaPruner``, or ``GroupNormPruner`` for the
DepGraph group-norm method) on a copy of the model, with the output layers and every layer edgeprune
keeps whole passed as ``ignored_layers``, and reads which output channels of each group's root layer
it removed (``pruner.step(interactive=True)`` yields the groups it prunes). Those indices are
translated into a :class:`~edgeprune.surgery.PruningPlan` on edgeprune's own graph (``ctx.graph``);
the pipeline's surgery stage then cuts and verifies the model as for every other method. A group
Torch-Pruning prunes that does not map onto one of edgeprune's groups is refused with a
one-line :class:`~edgeprune.errors.UnsupportedModelError` naming it.

The budget: with local ranking (the default) TP removes the same fraction ``r`` of every group;
``r`` is bisected to 1e-3 for the smallest ratio whose plan keeps at most ``ctx.flops_keep`` of the
dense MACs (edgeprune's exact cost of the plan, which equals TP's layer-wise conv/linear count on the
compact model). ``round_to`` is the run's width multiple (TP rounds each remaining width down to it).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, EdgepruneError, InputError, UnsupportedModelError
from ..surgery import PruningPlan
from .base import FitContext, MethodResult, PruningMethod, register_method


@dataclass
class TPOptions:
    global_pruning: bool = field(default=False, metadata={
        "help": "rank channels across all groups (Torch-Pruning's global_pruning) instead of removing the same "
                "fraction of every group"})


@dataclass
class TaylorOptions(TPOptions):
    samples: int = field(default=256, metadata={
        "help": "training samples (one seeded batch) whose task-loss gradients score the channels"})


@dataclass
class GroupNormOptions(TPOptions):
    reg: float = field(default=5e-4, metadata={"help": "group-sparsity coefficient of GroupNormPruner.regularize"})
    epochs: int | None = field(default=None, metadata={
        "help": "epochs of group-sparsity training before pruning (default: the run's training epochs)"})
    lr: float | None = field(default=None, metadata={
        "help": "learning rate of the sparsity training (default: half the run's lr, the fine-tuning lr)"})


class _TorchPruning(PruningMethod):
    options_cls = TPOptions
    family = "torch-pruning"  # a label for compare's tables and plots

    def __init__(self, **options):
        super().__init__(**options)  # validated against options_cls by the platform
        self._check()

    def _check(self) -> None:
        pass

    @classmethod
    def quick_options(cls) -> dict:
        """Options that make :meth:`fit` take a few seconds on digits (contract tests)."""
        return {}

    # -------------------------------------------------------------- hooks of the subclasses
    def importance(self):  # pragma: no cover - interface
        raise NotImplementedError

    def prepare(self, model: nn.Module, ctx: FitContext) -> tuple[nn.Module, dict]:
        """The weights to score (and return) plus history; the default scores the given model."""
        return model, {}

    def make_pruner(self, model, example, ratio, ignored, round_to):
        import torch_pruning as tp

        return tp.pruner.MetaPruner(model, example, importance=self.importance(), **_common(
            self.opts, ratio, ignored, round_to))

    def grads(self, model: nn.Module, ctx: FitContext) -> list | None:
        return None

    # -------------------------------------------------------------- the method
    def fit(self, model: nn.Module, ctx: FitContext) -> MethodResult:
        graph = ctx.graph
        base, history = self.prepare(model, ctx)
        base.eval()
        grads = self.grads(base, ctx)
        wm = max(1, int(ctx.width_multiple or 1))
        dense = graph.dense_cost()["macs"]
        cache: dict[float, tuple[PruningPlan, float]] = {}

        def attempt(ratio: float) -> tuple[PruningPlan, float]:
            if ratio not in cache:
                removed = self._tp_removed(base, ctx, ratio, wm, grads)
                plan = _plan_from_removed(graph, removed, wm, self.name)
                cache[ratio] = (plan, plan.predicted_cost(graph)["macs"] / dense)
            return cache[ratio]

        # TP keeps int(n * (1 - r)) channels of a group of n (rounded down to round_to) and skips a group
        # that would be left empty: kept MACs fall monotonically only while every group keeps >= 1 multiple
        n_min = min((g.size for g in graph.groups.values()), default=1)
        lo, hi = 0.0, max(0.0, 1.0 - wm / n_min - 1e-9)
        if attempt(hi)[1] > ctx.flops_keep:
            untouched = [g for g in graph.groups if g not in attempt(hi)[0].keep]
            if untouched:
                raise UnsupportedModelError(
                    f"{self.name}: Torch-Pruning's pruner removes no channel of edgeprune's group(s) "
                    f"{', '.join(untouched[:3])} even at ratio {hi:.3f}, so the {ctx.flops_keep:.0%} MACs budget is out "
                    "of its reach: its groups do not map onto edgeprune's here; use an edgeprune method (l1, pl-gates)")
            raise ConfigError(f"{self.name}: the largest usable pruning ratio {hi:.3f} (smallest group {n_min} "
                              f"channels) keeps {attempt(hi)[1]:.1%} of MACs, more than the budget's "
                              f"{ctx.flops_keep:.1%}; raise --flops-keep or lower --width-multiple")
        steps = 0
        while hi - lo > 1e-3:
            mid = round((lo + hi) / 2, 6)
            steps += 1
            if attempt(mid)[1] <= ctx.flops_keep:
                hi = mid
            else:
                lo = mid
        plan, kept = attempt(hi)
        plan.meta.update({"flops_keep": ctx.flops_keep, "pruning_ratio": hi, "bisection_steps": steps,
                          "macs_kept": kept, "round_to": wm, "global_pruning": self.opts.global_pruning})
        for p in base.parameters():
            p.grad = None
        history = dict(history, pruning_ratio=hi, bisection_steps=steps)
        return MethodResult(plan, base, history)

    def _tp_removed(self, base: nn.Module, ctx: FitContext, ratio: float, wm: int, grads) -> dict[str, list[int]]:
        """Root layer -> output channels Torch-Pruning removes at ``ratio`` (indices of the dense layer)."""
        m = copy.deepcopy(base).eval()
        if grads is not None:
            for p, g in zip(m.parameters(), grads):
                p.grad = None if g is None else g.clone()
        mods = dict(m.named_modules())
        names = {mod: n for n, mod in mods.items()}
        ignored = [mods[n] for n in ctx.graph.ignored if n in mods]
        removed: dict[str, list[int]] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner = self.make_pruner(m, ctx.example, ratio, ignored, wm)
            torch.manual_seed(ctx.seed)  # RandomImportance draws from torch's generator
            for group in pruner.step(interactive=True):
                dep, idxs = group[0]
                root = names[dep.target.module]
                removed[root] = sorted(int(i) for i in idxs)
                _check_members(ctx.graph, root, group, names)
                group.prune()  # later groups are scored on the pruned model, as TP's own step does
        return removed


def _run_option(ctx: FitContext, key: str):
    """A training option of the run; the config holds the one default, so a missing key is an error."""
    try:
        return ctx.train_options[key]
    except KeyError:
        raise ConfigError(f"FitContext.train_options has no {key!r}; pass the run's training options "
                          "(epochs, batch_size, lr, weight_decay)") from None


def _common(opts: TPOptions, ratio: float, ignored: list, round_to: int) -> dict:
    return dict(pruning_ratio=ratio, ignored_layers=ignored, global_pruning=bool(opts.global_pruning),
                round_to=round_to if round_to > 1 else None)


def _group_of_layer(graph, layer: str) -> str | None:
    for g in graph.groups.values():
        if f"{layer}:out" in g.members or g.name == layer:
            return g.name
    return None


def _check_members(graph, root: str, group, names: dict) -> None:
    """Refuse a TP group whose pruned output channels do not all belong to one edgeprune group."""
    from ..surgery.graph import PRUNABLE

    g = _group_of_layer(graph, root)
    if g is None:
        why = graph.frozen.get(root)
        raise UnsupportedModelError(
            f"Torch-Pruning prunes the group rooted at layer {root!r}, which edgeprune keeps whole"
            + (f" ({why})" if why else " (it reaches a model output or is not in edgeprune's groups)")
            + "; use an edgeprune method (l1, l2, pl-gates) for this model")
    for dep, _ in group:
        mod = dep.target.module
        if not isinstance(mod, PRUNABLE) or not dep.handler.__name__.startswith("prune_out"):
            continue
        other = _group_of_layer(graph, names.get(mod, "?"))
        if other != g:
            raise UnsupportedModelError(
                f"Torch-Pruning couples layer {names.get(mod, '?')!r} with group {g!r}, edgeprune puts it in "
                f"{other or 'no group'}: the groups do not map; use an edgeprune method for this model")


def _plan_from_removed(graph, removed: dict[str, list[int]], wm: int, method: str) -> PruningPlan:
    """edgeprune's plan from the root-layer output channels Torch-Pruning removed."""
    keep: dict[str, list[int]] = {}
    for root, idxs in removed.items():
        g = _group_of_layer(graph, root)
        lc = graph.layers.get(root)
        parts = lc.out_parts if lc is not None else []
        if len(parts) != 1 or parts[0][0] != g or len(parts[0][1]) != lc.out_full:
            raise UnsupportedModelError(f"Torch-Pruning's group rooted at {root!r} covers only part of edgeprune's "
                                        f"group {g!r} (a concatenation): the groups do not map; use an edgeprune method")
        roots = parts[0][1]
        gone = {roots[i] for i in idxs}
        kept = [i for i in range(graph.groups[g].size) if i not in gone]
        if len(kept) < graph.groups[g].size:
            keep[g] = kept
    plan = PruningPlan(keep, [], wm, method, {})
    try:
        plan.validate(graph)
    except InputError as e:
        raise UnsupportedModelError(f"{method}: Torch-Pruning's result does not fit edgeprune's graph: {e}") from None
    return plan


@register_method("tp-l1")
class TPL1(_TorchPruning):
    summary = "Torch-Pruning MetaPruner + MagnitudeImportance(p=1), local (per-group) ranking"

    def importance(self):
        import torch_pruning as tp

        return tp.importance.MagnitudeImportance(p=1)


@register_method("tp-l2")
class TPL2(_TorchPruning):
    summary = "Torch-Pruning MetaPruner + MagnitudeImportance(p=2), local (per-group) ranking"

    def importance(self):
        import torch_pruning as tp

        return tp.importance.MagnitudeImportance(p=2)


@register_method("tp-random")
class TPRandom(_TorchPruning):
    summary = "Torch-Pruning MetaPruner + RandomImportance, local ranking (a floor every criterion should beat)"

    def importance(self):
        import torch_pruning as tp

        return tp.importance.RandomImportance()


@register_method("tp-taylor")
class TPTaylor(_TorchPruning):
    summary = "Torch-Pruning MetaPruner + TaylorImportance (task-loss gradients of one training batch), local ranking"
    options_cls = TaylorOptions

    def _check(self) -> None:
        if self.opts.samples < 1:
            raise ConfigError(f"tp-taylor: samples must be >= 1, got {self.opts.samples}")

    @classmethod
    def quick_options(cls) -> dict:
        return {"samples": 64}

    def importance(self):
        import torch_pruning as tp

        return tp.importance.TaylorImportance()

    def grads(self, model: nn.Module, ctx: FitContext) -> list:
        """Gradients of the task loss on one seeded batch of ``samples`` training samples (BN in eval mode)."""
        from ..train import task_loss

        idx = np.random.default_rng(ctx.seed).permutation(len(ctx.x_train))[: self.opts.samples]
        xb, yb = torch.from_numpy(ctx.x_train[idx]), torch.from_numpy(ctx.y_train[idx])
        m = copy.deepcopy(model).eval()
        m.zero_grad(set_to_none=True)
        task_loss(ctx.task, m(xb), xb, yb).backward()
        # a weight the task loss does not reach (the head of a second output) has a zero gradient, not none
        return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in m.parameters()]


@register_method("tp-groupnorm")
class TPGroupNorm(_TorchPruning):
    summary = ("Torch-Pruning GroupNormPruner (DepGraph): group-sparsity training, then group-norm importance, "
               "local ranking")
    options_cls = GroupNormOptions
    trains = True  # its sparsity training (`edgeprune methods` shows it)

    def _check(self) -> None:
        o = self.opts
        if o.reg < 0 or (o.epochs is not None and o.epochs < 0) or (o.lr is not None and o.lr <= 0):
            raise ConfigError("tp-groupnorm: reg must be >= 0, epochs >= 0 and lr > 0")

    @classmethod
    def quick_options(cls) -> dict:
        return {"epochs": 1}

    def own_epochs(self, train_options: dict) -> int:
        """Sparsity-training epochs: the ``epochs`` option, else the run's training epochs; a run that trains
        none (pretrained ``--weights`` with ``--epochs 0``) gets its fine-tuning epochs (at least one)."""
        if self.opts.epochs is not None:
            return int(self.opts.epochs)
        return int(train_options["epochs"]) or max(1, int(train_options.get("finetune_epochs") or 1))

    def make_pruner(self, model, example, ratio, ignored, round_to):
        import torch_pruning as tp

        # Torch-Pruning 1.6 has no GroupNormImportance; its group-norm criterion is GroupMagnitudeImportance(p=2)
        imp_cls = getattr(tp.importance, "GroupNormImportance", None) or tp.importance.GroupMagnitudeImportance
        return tp.pruner.GroupNormPruner(model, example, importance=imp_cls(p=2), reg=self.opts.reg,
                                         **_common(self.opts, ratio, ignored, round_to))

    def prepare(self, model: nn.Module, ctx: FitContext) -> tuple[nn.Module, dict]:
        """DepGraph's group-norm method: train with GroupNormPruner's group-sparsity regularizer first."""
        from ..train import seed_everything, train, training_layout

        epochs = self.own_epochs({"epochs": _run_option(ctx, "epochs"), **ctx.train_options})
        model = copy.deepcopy(model)
        if epochs <= 0:
            return model, {"sparsity_epochs": 0}
        lr = self.opts.lr if self.opts.lr is not None else 0.5 * float(_run_option(ctx, "lr"))
        mods = dict(model.named_modules())
        ignored = [mods[n] for n in ctx.graph.ignored if n in mods]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner = self.make_pruner(model, ctx.example, 0.5, ignored, 1)

        class RegSGD(torch.optim.SGD):
            def step(self, closure=None):
                try:
                    pruner.regularize(model)  # the group-sparsity gradient, as in Torch-Pruning's examples
                except IndexError as e:
                    raise EdgepruneError(f"Torch-Pruning's GroupNormPruner.regularize failed: IndexError: {e} "
                                         "(ConvTranspose layers are not supported by it)") from None
                return super().step(closure)

        wd = float(_run_option(ctx, "weight_decay"))
        opt = RegSGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd, nesterov=True)
        seed_everything(ctx.seed)
        ctx.log(f"  tp-groupnorm: {epochs} epoch(s) of group-sparsity training (reg {self.opts.reg}, lr {lr:g})")
        with training_layout(model):  # channels-last where safe: several times faster on CPU
            hist = train(model, ctx.x_train, ctx.y_train, task=ctx.task, epochs=epochs,
                         batch_size=int(_run_option(ctx, "batch_size")), lr=lr, weight_decay=wd, seed=ctx.seed,
                         optimizer=opt)
        return model.eval(), {"sparsity_epochs": epochs, "sparsity_loss": [e["loss"] for e in hist.epochs]}
