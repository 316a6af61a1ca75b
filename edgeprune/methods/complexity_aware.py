"""``complexity-aware``: Bernoulli unit and residual-branch pruning trained from scratch.

Paper: Guenter & Sideris, "Complexity-Aware Training of Deep Neural Networks for Optimal
Structure Discovery", arXiv 2411.09127 (predecessor arXiv 2406.04549). Stated there: every
unit and every layer is scaled by a binary random variable ξ ~ Bernoulli(π); the weights
and the π are optimised together from scratch; a structure whose π converges to 0 is
permanently inactive (it stops costing compute, in training too); the cost trades accuracy
against computational (FLOPs) and parameter complexity with three user parameters
(accuracy vs pruning, layer vs unit pruning, FLOPs vs parameters) and sets the many
per-structure regularisation weights automatically; an ODE analysis gives conditions that
avoid premature pruning; the result is a deterministic network.

Our reconstruction (docs/methods/complexity-aware.md says which part is which):

* ξ per channel of every prunable group (applied where the channel is consumed,
  :class:`~edgeprune.surgery.masking.ChannelMasks`, so ξ = 0 *is* the removed channel) and
  per droppable residual branch (``post(x + ξ_b · f(x))``);
* gradient of the sampled network to π by the straight-through estimator
  (``z = ξ + π − sg(π)``: forward with the 0/1 sample, backward as if z were π); the
  complexity term is the exact closed-form expectation (it is multilinear in π);
* loss = task + λ · [2(1 − β) · C(π_units, sg π_branches) + 2β · C(sg π_units, π_branches)],
  C = α · E[MACs]/MACs_dense + (1 − α) · E[params]/params_dense, so every structure's
  regularisation strength is λ · ∂C/∂π_k (its own MACs/params share), never hand-tuned; β = ½ is
  the plain λ · C;
* λ fixed by the user (the paper's mode, the network finds its own size) or, by default,
  set from the run's MACs budget: a multiplier raised by ascent on E[MACs]/target − 1 while
  the target falls from 1 to ``flops_keep`` over the warm-up (a short dual search instead
  of a sweep over λ);
* projected SGD on π ∈ [0, 1]; a structure is removed for good once its π has stayed below
  ``pi_min`` for ``patience`` consecutive steps (our anti-premature condition, not the
  paper's ODE-derived one): its π is set to 0 and frozen, and a removed branch is no longer
  computed (its output module returns zeros) for the rest of training; with
  ``compact_in_training`` (default) everything removed is also cut out of the training model by
  the surgery (checked four times an epoch; :mod:`~edgeprune.methods.live_compaction`: weights,
  batch-norm statistics and momentum of the kept entries carried over, each cut checked against
  the masked forward), so later steps no longer compute it;
* optional ``polarize``: a penalty γ·Σπ(1 − π) ramped in after the warm-up drives every π to 0 or 1;
* at the end π ≥ ½ keeps a structure; with the budget mode the kept widths are fitted to
  the budget exactly (π ranks the channels, the weight norm breaks ties), batch-norm
  statistics are re-estimated for the deterministic network and the plan goes to surgery.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
import time

import numpy as np
import torch
from torch import nn

from ..surgery import branch_output_module, plan_from_scores
from ..train import Schedule, TrainHook
from .base import FitContext, MethodResult, PruningMethod, jsonable, register_method, working_copy
from .gates import BernoulliST, GatedModel, has_batchnorm, recalibrate_bn
from .gating import widths_to_budget
from .live_compaction import LiveCompaction
from .options import option


@dataclass
class ComplexityAwareOptions:
    lam: float | None = option(None, "λ, accuracy vs pruning (fixed: the network finds its own size); default: set "
                                     "from the run's MACs budget by ascent on E[MACs]/target - 1", min=0)
    beta: float = option(0.5, "β, layer vs unit pruning: share of the complexity pressure on residual branches "
                              "(0: only units feel it, 1: only branches)", min=0, max=1)
    alpha: float = option(0.5, "α, MACs vs parameters in the complexity C", min=0, max=1)
    units: bool = option(True, "prune units/channels of the coupled groups")
    branches: bool = option(True, "prune whole droppable residual branches")
    epochs: int | None = option(None, "epochs of joint training (default: the run's train.epochs)", min=0,
                                from_run="train.epochs")
    lr: float | None = option(None, "peak learning rate of the weights (default: the run's train.lr)", gt=0,
                              from_run="train.lr")
    batch_size: int | None = option(None, "mini-batch size (default: the run's train.batch_size)", min=1,
                                    from_run="train.batch_size")
    pi_init: float = option(0.9, "initial keep probability π of every structure", min=0, max=1)
    pi_lr: float = option(0.1, "constant step of the projected SGD on π", min=0)
    pi_min: float = option(0.05, "a structure whose π stays below this ...", min=0, max=1)
    patience: int = option(50, "... for this many consecutive steps is removed for good", min=1)
    warmup: float = option(0.5, "budget mode: fraction of the steps over which the MACs target falls from 1 to "
                                "flops_keep", min=0, max=1)
    budget_lr: float = option(0.5, "budget mode: ascent rate of λ on E[MACs]/target - 1", min=0)
    polarize: float = option(0.0, "weight of a penalty Σ π(1 − π) ramped in linearly after the warm-up: drives every "
                                  "π to 0 or 1 before the end (0: off, the end-of-training rounding decides)", min=0)
    from_scratch: bool = option(True, "re-initialise the weights (the paper's protocol) instead of starting from "
                                      "the dense model")
    compact_in_training: bool = option(True, "cut removed structures out of the training model with the surgery as "
                                             "soon as they are removed (checked 4 times an epoch), so they stop "
                                             "costing compute; false: they stay masked until the end")
    calib_samples: int = option(1024, "training samples for the final batch-norm re-estimate", min=0)
    eval_samples: int = option(2000, "validation samples evaluated after each epoch (0: none)", min=0)

    def __post_init__(self):
        if not (self.units or self.branches):
            raise ValueError("prune units or branches (or both): units=false and branches=false leave nothing")


class ExpectedComplexity:
    """Closed-form E[params] and E[MACs] of the compact network under independent keep probabilities.

    Mirrors :class:`~edgeprune.surgery.ModelGraph`'s cost table: a layer keeps
    ``E[out] = out_full − Σ(1 − π)`` over the channels its groups own (likewise its input);
    gates are independent and no layer has input and output in one group, so
    ``E[out · in] = E[out] · E[in]``; a layer inside residual branches is multiplied by their
    keep probabilities, and so are the parameters of a branch the table does not model. With
    0/1 probabilities it equals ``graph.cost_of_sets``.
    """

    def __init__(self, graph, offsets: dict[str, int], branch_names: list[str]):
        bindex = {b: i for i, b in enumerate(branch_names)}
        self.const = float(graph.const_params)
        self.branch_const = [(bindex[b], float(graph.branches[b].const_params)) for b in branch_names]
        self.rows = []
        for lc in graph.layers.values():
            in_branches = [bindex[b] for b in branch_names if lc.name in graph.branches[b].layers]

            def idx(parts):
                return torch.as_tensor([offsets[g] + r for g, roots in parts if g in offsets for r in roots], dtype=torch.long)

            self.rows.append((lc.kind, float(lc.out_full), idx(lc.out_parts), float(lc.in_full), idx(lc.in_parts),
                              float(lc.kernel), float(lc.spatial), float(lc.groups), bool(lc.bias), in_branches))

    def __call__(self, q: torch.Tensor, qb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, qb = q.double(), qb.double()
        params = q.new_tensor(self.const)
        for b, c in self.branch_const:
            params = params - (1 - qb[b]) * c
        macs = q.new_zeros(())
        for kind, out_full, out_idx, in_full, in_idx, kernel, spatial, groups, bias, brs in self.rows:
            out = out_full - (1 - q[out_idx]).sum() if len(out_idx) else q.new_tensor(out_full)
            if kind == "norm":
                p, m = (2 * out if bias else out * 0), out * 0
            else:
                cin = in_full - (1 - q[in_idx]).sum() if len(in_idx) else q.new_tensor(in_full)
                w = out * kernel if kind == "depthwise" else out * cin / groups * kernel
                p, m = w + (out if bias else 0), w * spatial
            for b in brs:
                p, m = p * qb[b], m * qb[b]
            params, macs = params + p, macs + m
        return params, macs


class BernoulliNetwork(GatedModel):
    """The model with ξ ~ Bernoulli(π) on every channel of every group and on every residual branch.

    π is the gate parameter itself (:class:`~edgeprune.methods.gates.BernoulliST` with ``param="prob"``,
    straight-through gradients, projected onto [0, 1]); training mode draws one 0/1 sample per structure
    and step, eval mode is the deterministic network (π ≥ ½ keeps). Structures can be removed for good
    (:meth:`remove_stale`); a removed branch whose f(x) is one child module is no longer computed.
    """

    def __init__(self, model: nn.Module, graph, *, units: bool, branches: bool, pi_init: float):
        super().__init__(model, graph, gate=BernoulliST("prob"), branches=branches, init=pi_init)
        if not units:
            with torch.no_grad():
                self.logits.fill_(1.0)
            self.logits.requires_grad_(False)
        self.alive = torch.ones(self.masks.n, dtype=torch.bool)
        self.alive_b = torch.ones(len(self.branch_names), dtype=torch.bool)
        self.below = torch.zeros(self.masks.n, dtype=torch.long)
        self.below_b = torch.zeros(len(self.branch_names), dtype=torch.long)
        self.complexity = ExpectedComplexity(graph, self.masks.offsets, self.branch_names)
        self.skipped: list[str] = []

    @property
    def pi(self) -> nn.Parameter:
        return self.logits

    @property
    def pi_b(self) -> nn.Parameter:
        return self.branch_logits

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in (self.pi, self.pi_b) if p.requires_grad and p.numel()]

    @torch.no_grad()
    def remove_stale(self, pi_min: float, patience: int, step: int) -> list[dict]:
        """Project π onto [0, 1]; a structure whose π stayed below ``pi_min`` for ``patience`` consecutive
        steps is removed for good (π = 0 from now on; a group's last channel stays: a layer needs an output)."""
        removed = []
        for p, alive, cnt, kind in ((self.pi, self.alive, self.below, "unit"),
                                    (self.pi_b, self.alive_b, self.below_b, "branch")):
            p.clamp_(0.0, 1.0)
            p[~alive] = 0.0
            low = (p < pi_min) & alive
            cnt[low] += 1
            cnt[~low] = 0
            gone = cnt >= patience
            if kind == "unit" and gone.any():
                for g in self.masks.groups:
                    sl = slice(self.masks.offsets[g], self.masks.offsets[g] + self.masks.sizes[g])
                    if not (alive[sl] & ~gone[sl]).any():
                        cand = alive[sl].nonzero().flatten()
                        keep = sl.start + int(cand[p[sl][cand].argmax()])
                        gone[keep], cnt[keep] = False, 0
            if gone.any():
                alive[gone] = False
                p[gone] = 0.0
                cnt[gone] = 0
                removed.append({"step": step, "kind": kind, "count": int(gone.sum())})
                if kind == "branch":
                    for i in gone.nonzero().flatten().tolist():
                        self._skip_branch(self.branch_names[i])
        return removed

    def _skip_branch(self, name: str) -> None:
        """A removed branch stops costing compute: its output module returns zeros shaped like its input
        (only where that one module computes f(x) from the block input x; else it stays scaled by 0)."""
        if len(self.graph.branches[name].modules) != 1:
            return
        out = branch_output_module(self.model.get_submodule(name))
        out.forward = lambda x, *a, **k: torch.zeros_like(x)
        self.skipped.append(name)

    def close(self) -> None:
        modules = dict(self.model.named_modules())
        for name in self.skipped:
            if name in modules:
                branch_output_module(modules[name]).__dict__.pop("forward", None)
        self.skipped = []
        super().close()


class ComplexityHook(TrainHook):
    """Joint training of weights and π: the complexity loss, projected SGD on π, removal, curves."""

    def __init__(self, net: BernoulliNetwork, o: ComplexityAwareOptions, ctx: FitContext, hist: dict,
                 live: LiveCompaction | None = None):
        self.net, self.o, self.ctx, self.hist, self.live = net, o, ctx, hist, live
        dense = ctx.graph.dense_cost()
        self.dense_macs, self.dense_params = float(dense["macs"]), float(max(1, dense["params"]))
        self.optimizer: torch.optim.Optimizer | None = None
        self.probe = torch.from_numpy(ctx.x_train[:16])  # the inputs a compaction is checked on
        self.forward_macs = self.dense_macs  # MACs per sample of the forward actually computed
        self._epoch_macs = 0.0
        self.budget_mode = o.lam is None
        self.lam = 0.0 if self.budget_mode else float(o.lam)
        self.ratio = 0.0
        self.total = self.warm = self.spe = 1

    def begin(self, schedule: Schedule) -> None:
        self.total, self.spe = schedule.total_steps, schedule.steps_per_epoch
        self.warm = max(1, int(round(self.o.warmup * self.total)))

    def params(self) -> list[dict]:
        return [{"params": self.net.trainable(), "lr": self.o.pi_lr, "momentum": 0.0, "weight_decay": 0.0,
                 "nesterov": False, "constant_lr": True}]

    def target(self, step: int) -> float:
        return 1.0 - (1.0 - self.ctx.flops_keep) * min(1.0, step / self.warm)

    def _c(self, pu, pb):
        p, m = self.net.complexity(pu, pb)
        return self.o.alpha * m / self.dense_macs + (1 - self.o.alpha) * p / self.dense_params

    def loss(self, model, batch, step):
        net, o = self.net, self.o
        reg = 2 * (1 - o.beta) * self._c(net.pi, net.pi_b.detach()) + 2 * o.beta * self._c(net.pi.detach(), net.pi_b)
        if self.budget_mode:
            e_macs = float(net.complexity(net.pi.detach(), net.pi_b.detach())[1]) / self.dense_macs
            self.ratio = e_macs / self.target(step) - 1.0
        loss = self.lam * reg
        if o.polarize > 0 and step >= self.warm:  # Σ π(1 − π), ramped in after the warm-up: π < ½ falls, π > ½ rises
            ramp = (step - self.warm + 1) / max(1, self.total - self.warm)
            loss = loss + o.polarize * ramp * sum((p * (1 - p)).sum() for p in net.trainable())
        return loss.float()

    def after_step(self, model, step):
        net, o, h = self.net, self.o, self.hist
        self._epoch_macs += self.forward_macs
        removed = net.remove_stale(o.pi_min, o.patience, step + 1)
        h["removed"].extend(removed)
        if self.live and (step + 1) % max(1, self.spe // 4) == 0 and self.live.pending():
            removed = removed or self.live.step(self.optimizer, self.probe, step + 1, self.ctx.log)
        if removed:
            self.forward_macs = self._physical_macs()
        if self.budget_mode:  # during the ramp λ only follows the falling target (no wind-up)
            r = self.ratio if step + 1 >= self.warm else max(0.0, self.ratio)
            self.lam = max(0.0, self.lam + o.budget_lr * r)
        if (step + 1) % max(1, self.spe // 4) == 0 or step + 1 == self.total:
            with torch.no_grad():
                p, m = net.complexity(net.pi, net.pi_b)
            h["step"].append(step + 1)
            h["lambda"].append(self.lam)
            h["expected_macs"].append(float(m) / self.dense_macs)
            h["expected_params"].append(float(p) / self.dense_params)
            h["macs_target"].append(self.target(step + 1) if self.budget_mode else None)
            h["alive_units"].append(int(net.alive.sum()))
            h["alive_branches"].append(int(net.alive_b.sum()))

    def _physical_macs(self) -> float:
        """MACs per sample of the network the forward computes: what was cut out and the skipped branches are gone,
        masked channels still cost theirs."""
        plan = self.live.plan if self.live is not None else None
        keep = {g: set(v) for g, v in plan.keep.items()} if plan else {}
        dropped = list(dict.fromkeys((plan.dropped if plan else []) + self.net.skipped))
        return float(self.ctx.graph.cost_of_sets(keep, dropped)["macs"])

    def after_epoch(self, model, epoch):
        net = self.net
        macs, self._epoch_macs = self._epoch_macs / self.spe, 0.0
        live_pi = torch.cat([net.pi.detach()[net.alive], net.pi_b.detach()[net.alive_b]])
        return {"forward_macs_per_sample": macs, "forward_macs_kept": macs / self.dense_macs,
                "pi_undecided": int(((live_pi > 0.02) & (live_pi < 0.98)).sum()),
                "pi_distance_to_binary": float(torch.minimum(live_pi, 1 - live_pi).mean()) if live_pi.numel() else 0.0,"expected_macs": self.hist["expected_macs"][-1] if self.hist["expected_macs"] else None,
                "lambda": self.lam, "alive_units": int(net.alive.sum()), "alive_branches": int(net.alive_b.sum())}


PLOTS = {
    "title": "Complexity-aware training (measured during the prune stage)",
    "panels": [
        {"title": "Expected fraction of MACs and parameters", "xlabel": "training step",
         "series": [{"y": "expected_macs", "x": "step", "label": "E[MACs] kept", "color": "#2f6fb3"},
                    {"y": "expected_params", "x": "step", "label": "E[params] kept", "color": "#27ae60"},
                    {"y": "macs_target", "x": "step", "label": "budget (annealed)", "style": "--", "color": "#8a94ad"}]},
        {"title": "λ (accuracy vs pruning)", "xlabel": "training step",
         "series": [{"y": "lambda", "x": "step", "color": "#d35400"}]},
        {"title": "Structures still alive", "xlabel": "training step",
         "series": [{"y": "alive_units", "x": "step", "label": "units", "color": "#2f6fb3"},
                    {"y": "alive_branches", "x": "step", "label": "branches", "color": "#c0392b"}]},
    ],
}


@register_method("complexity-aware")
class ComplexityAware(PruningMethod):
    summary = ("Bernoulli(π) variables on every unit and residual branch trained from scratch with the weights "
               "under an expected MACs/params cost; structures whose π stays near 0 are removed for good "
               "(Guenter & Sideris 2024; reconstruction)")
    options_cls = ComplexityAwareOptions
    trains = True
    trains_from_scratch = True
    plots = PLOTS

    def __init__(self, **options):
        super().__init__(**options)
        self.trains_from_scratch = bool(self.opts.from_scratch)

    @classmethod
    def quick_options(cls) -> dict:
        return {"epochs": 1, "eval_samples": 0, "calib_samples": 256, "patience": 5}

    def own_epochs(self, train_options: dict) -> int:
        if self.opts.epochs is not None:
            return int(self.opts.epochs)
        return int(train_options["epochs"]) or max(1, int(train_options.get("finetune_epochs") or 1))

    def fit(self, model: nn.Module, ctx: FitContext) -> MethodResult:
        o = self.opts
        t_start = time.perf_counter()
        epochs = self.own_epochs(ctx.train_options)
        model = working_copy(model, reinitialise=o.from_scratch, seed=ctx.seed)
        net = BernoulliNetwork(model, ctx.graph, units=o.units, branches=o.branches, pi_init=o.pi_init)
        net.generator = torch.Generator().manual_seed(ctx.seed)  # one stream: shuffle and samples
        hist: dict = {"options": self.options, "epochs_run": epochs, "step": [], "lambda": [], "expected_macs": [],
                      "expected_params": [], "macs_target": [], "alive_units": [], "alive_branches": [],
                      "removed": [], "plots": PLOTS}
        live = LiveCompaction(net, ctx.graph, ctx.example) if o.compact_in_training else None
        hook = ComplexityHook(net, o, ctx, hist, live)
        overrides = {k: getattr(o, k) for k in ("lr", "batch_size") if getattr(o, k) is not None}
        # the loop's optimizer, built here so that a compaction can re-point it at the compact parameters
        claimed = {id(p) for p in net.trainable()}
        hook.optimizer = torch.optim.SGD([{"params": [p for p in net.parameters() if id(p) not in claimed]},
                                          *hook.params()], lr=o.lr or ctx.run_option("lr"), momentum=0.9,
                                         weight_decay=ctx.run_option("weight_decay"), nesterov=True)
        val = (ctx.x_val[: o.eval_samples], ctx.y_val[: o.eval_samples]) if o.eval_samples else None

        def log_epoch(rec):
            ctx.log(f"  complexity-aware epoch {rec['epoch']}/{epochs}: loss {rec['loss']:.3f}, "
                    f"E[MACs] {rec['expected_macs']:.1%}, λ {rec['lambda']:.3g}, alive units {rec['alive_units']}/"
                    f"{net.masks.n}, branches {rec['alive_branches']}/{len(net.branch_names)}, {rec['seconds']:.1f}s"
                    + (f", val {rec['val_metric']:.2f}" if "val_metric" in rec else ""))

        run = ctx.train(net, hook, epochs=epochs, val=val, generator=net.generator, on_epoch=log_epoch,
                        label="complexity-aware", optimizer=hook.optimizer, **overrides)
        if live is not None:
            live.restore()  # the trained weights back in the original model (the one the plan applies to)
            hist["compactions"] = live.events
        hist["epochs"] = run.to_list()
        hist["epoch_seconds"] = [r["seconds"] for r in hist["epochs"]]
        hist["train_seconds_total"] = float(sum(hist["epoch_seconds"]))
        hist["epoch_forward_macs_kept"] = [r["forward_macs_kept"] for r in hist["epochs"]]
        hist["lambda_final"] = hook.lam
        plan, info = self._plan(net, ctx, hook.budget_mode)
        hist.update(info)
        net.close()
        model.eval()
        hist["seconds_total"] = time.perf_counter() - t_start
        return MethodResult(plan, model, jsonable(hist), extras=_counters(hist))

    def _plan(self, net: BernoulliNetwork, ctx: FitContext, budget_mode: bool):
        o, graph = self.opts, ctx.graph
        dense = graph.dense_cost()
        pi, pib = net.pi.detach().clone(), net.pi_b.detach().clone()
        undecided = int(((pi > 0.02) & (pi < 0.98)).sum()) + int(((pib > 0.02) & (pib < 0.98)).sum())
        dropped = [b for b, p in zip(net.branch_names, pib.tolist()) if p < 0.5]
        if budget_mode and not o.units:  # branch-only: drop the least likely branches until the budget holds
            goal = ctx.flops_keep * dense["macs"]
            dropped = [b for b, a in zip(net.branch_names, net.alive_b.tolist()) if not a]
            for b in sorted(net.branch_names, key=lambda b: float(pib[net.branch_names.index(b)])):
                if graph.cost(None, dropped)["macs"] <= goal:
                    break
                if b not in dropped:
                    dropped.append(b)
        # π ranks the channels; the consumers' weight norm breaks ties (π of kept channels often sits at 1);
        # a structure removed in training scores below every live one
        norms = _consumer_norms(net)
        alive = {g: v.numpy() for g, v in net.masks.split(net.alive.float()).items()}
        scores = {g: np.where(alive[g] > 0, v.numpy().astype(np.float64) + 1e-3 * norms[g] / (norms[g].max() + 1e-12), -1.0)
                  for g, v in net.masks.split(pi).items()}
        if not o.units:
            widths, budget = graph.full_keep(), {"goal": ctx.flops_keep * dense["macs"] if budget_mode else None}
        elif budget_mode:
            widths, budget = widths_to_budget(graph, scores, ctx.flops_keep, ctx.width_multiple, dropped)
            # a removed structure never comes back (a width multiple > 1 may round up past it: counted below)
            widths = {g: min(w, max(1, int(alive[g].sum()))) for g, w in widths.items()}
        else:
            widths, budget = {g: max(1, int((v >= 0.5).sum())) for g, v in net.masks.split(pi).items()}, {"goal": None}
        plan = plan_from_scores(graph, scores, widths, width_multiple=ctx.width_multiple, dropped=dropped,
                                method="complexity-aware", meta={"flops_keep": ctx.flops_keep, "lam": o.lam,
                                                                 "alpha": o.alpha, "beta": o.beta})
        keep = torch.zeros(net.masks.n)
        for g in net.masks.groups:
            idx = plan.keep.get(g, range(graph.groups[g].size))
            keep[net.masks.offsets[g] + torch.as_tensor(list(idx), dtype=torch.long)] = 1.0
        keep_b = torch.tensor([0.0 if b in dropped else 1.0 for b in net.branch_names])
        calib = torch.from_numpy(ctx.x_train[: o.calib_samples])
        if o.calib_samples and has_batchnorm(net.model):
            recalibrate_bn(net, calib, keep, keep_b)
        net.masks.fold_(net.model, keep)
        with torch.no_grad():  # the deterministic network: every π is now 0 or 1 (the plan's decision)
            net.pi.copy_(keep)
            net.pi_b.copy_(keep_b)
        cost = plan.predicted_cost(graph)
        info = {
            "pi_before_rounding": {g: v.tolist() for g, v in net.masks.split(pi).items()},
            "branch_pi_before_rounding": dict(zip(net.branch_names, pib.tolist())),
            "pi_final": {g: v.tolist() for g, v in net.masks.split(keep).items()},
            "branch_pi_final": dict(zip(net.branch_names, keep_b.tolist())),
            "removed_in_training_but_kept": int(((~net.alive) & (keep > 0)).sum()) + int(((~net.alive_b) & (keep_b > 0)).sum()),
            "dropped_branches": dropped,
            "surviving_branches": len(ctx.graph.branches) - len(dropped),  # the model's, gated or not
            "undecided_at_end": undecided,
            "units_removed_in_training": int((~net.alive).sum()),
            "branches_removed_in_training": int((~net.alive_b).sum()),
            "branches_skipped_in_training": list(net.skipped),
            "plan_macs_kept": cost["macs"] / dense["macs"],
            "plan_params_kept": cost["params"] / dense["params"],
            "budget": budget,
        }
        ctx.log(f"  complexity-aware plan: MACs kept {info['plan_macs_kept']:.1%} (asked {ctx.flops_keep:.0%}), params "
                f"{info['plan_params_kept']:.1%}, {len(dropped)}/{len(net.branch_names)} branch(es) dropped, "
                f"{info['units_removed_in_training']} units removed during training, {undecided} π undecided at the end")
        return plan, info


def _counters(hist: dict) -> dict:
    """What the benchmark harness records per row (``MethodResult.extras``): the structure found, and what
    removal during training saved (forward MACs of the network trained, relative to the dense one, as % over
    the epochs and in the last epoch)."""
    fwd = [100.0 * float(f) for f in hist["epoch_forward_macs_kept"]]
    return {
        "surviving_branches": int(hist["surviving_branches"]),
        "units_removed_in_training": int(hist["units_removed_in_training"]),
        "branches_removed_in_training": int(hist["branches_removed_in_training"]),
        "undecided_at_end": int(hist["undecided_at_end"]),
        "train_fwd_macs_pct": sum(fwd) / len(fwd) if fwd else 100.0,
        "last_epoch_fwd_macs_pct": fwd[-1] if fwd else 100.0,
    }


def _consumer_norms(net: BernoulliNetwork) -> dict[str, np.ndarray]:
    """Per group channel: the L1 norm of the consumer weights it feeds (a magnitude tie-break)."""
    tot = torch.zeros(net.masks.n + 1)
    with torch.no_grad():
        for name, src in net.masks.src.items():
            w = net.model.get_submodule(name).weight
            dim = 0 if net.masks.kinds[name] == "convT" else 1
            tot.index_add_(0, src, w.abs().transpose(0, dim).reshape(w.shape[dim], -1).sum(1).float())
    return {g: v.numpy() for g, v in net.masks.split(tot[1:]).items()}
