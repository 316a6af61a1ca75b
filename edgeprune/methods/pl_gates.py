"""``pl-gates``: condition-number-guided gates trained jointly with the model (primary method).

Paper: Chen, Shi, Dong, ..., Dick, Lv, Shang, "Over-parameterized Model Optimization with
Polyak-Łojasiewicz Condition", ICLR 2023. Stated there: convergence and generalization
gaps are bounded by the condition number κ = L/μ; a gating network trained alongside the
model masks poorly behaved nodes and is learned by minimizing κ as an extra loss.
Everything below the level of that sentence is our reconstruction (see
docs/methods/pl-gates.md for the split):

* one hard-concrete gate per node of every prunable group (and optionally per droppable
  residual branch), with a learned logit per node (input-independent: the deliverable is a
  static plan);
* gates act where the channels are consumed (:class:`~edgeprune.surgery.masking.ChannelMasks`),
  so a gate of exactly 0 is exactly the removed channel;
* loss = task + w·r² + λ·r + γ · log κ̂ (or γ · κ̂), with r = E[MACs] / target(t) - 1,
  E[MACs] the exact expected cost of the compact model under the gates' keep
  probabilities, the target decreasing from 1 to ``flops_keep`` over the warm-up, w a
  fixed penalty weight and λ a multiplier raised by ascent on r after the warm-up (it
  removes the residual error the penalty alone leaves; no wind-up during the ramp), and κ̂
  estimated every ``kappa_every`` steps on ``kappa_batch`` samples from the empirical
  tangent kernel of the masked network (gradient to the gate logits only);
* at the end the gate logits rank the nodes, a global threshold plus a greedy fill meet the
  MACs budget exactly (``graph.cost``), the test-time gate values are folded into the
  weights and batch-norm statistics are re-estimated for the static network.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..distributed import all_reduce_mean
from ..errors import ConfigError
from ..models import output_list, primary_output
from ..surgery import plan_from_scores
from ..train import Schedule, TrainHook, evaluate, task_loss
from .base import FitContext, MethodResult, PruningMethod, jsonable, register_method, working_copy
from .gates import GatedModel, HardConcrete, StaticView, has_batchnorm, recalibrate_bn
from .gate_network import GateNetwork, calibration_logits
from .gating import (ExpectedCost, bn_eval, loss_level_kappa, output_projection, standardize, timed_kappa,
                     vmap_safe_prelu, widths_to_budget)
from .options import option


@dataclass
class PLGatesOptions:
    """Options of ``pl-gates`` (``None``: taken from the run's training options)."""

    gamma: float = option(0.1, "weight γ of the condition-number term (0 disables it); with gamma_calibrate, "
                               "γ = 1 makes the term's gate gradient as large as the task's at the first estimate", min=0)
    kappa_loss: Literal["ratio", "log", "linear"] = option(
        "ratio", "term added to the loss: γ·c·κ̂/κ̂₀ (κ̂₀ the first estimate, c the calibration), γ·c·log κ̂, "
                 "or γ·c·κ̂ (the paper's form, not normalised)")
    gamma_calibrate: bool = option(True, "scale the term by c = ‖∇_gates task loss‖ / ‖∇_gates term‖ measured at the "
                                         "first estimate (false: c = 1)")
    kappa_estimator: Literal["kernel", "loss"] = option(
        "loss", "how κ̂ is estimated: the loss-level L̂/μ̂ on kappa_batch samples (μ̂ = ‖∇L‖²/(2L), the PL constant; "
                "L̂ the top Hessian eigenvalue by power iteration), or λmax/λmin of their tangent kernel (kernel: the "
                "same accuracy at about twice the cost, issue 16)")
    kappa_every: int = option(50, "estimate κ̂ every k steps (0: never, not even for the log)", min=0)
    kappa_batch: int = option(32, "samples in the κ̂ sub-batch (λ_min needs many kernel rows: >= 32)", min=2)
    kappa_outputs: int = option(4, "output directions per sample in the tangent kernel: all outputs when the model "
                                    "has at most this many, else a fixed random orthonormal projection", min=1)
    epochs: int | None = option(None, "epochs of joint gate + weight training (default: the run's train.epochs, or "
                                      "train.finetune_epochs (at least 1) when train.epochs is 0)", min=0,
                                from_run="train.epochs")
    lr: float | None = option(None, "peak learning rate of the weights (default: the run's train.lr)", gt=0,
                              from_run="train.lr")
    batch_size: int | None = option(None, "mini-batch size (default: the run's train.batch_size)", min=1,
                                    from_run="train.batch_size")
    gate_lr: float | None = option(None, "Adam learning rate of the gate logits (default: 15 / warm-up steps, "
                                         "clipped to [0.01, 1], so that logits can cross the decision boundary "
                                         "during the warm-up)", gt=0)
    temperature: float = option(2.0 / 3.0, "hard-concrete temperature β", gt=0)
    gate_init: float = option(3.0, "initial gate logit (3.0: P(open) ≈ 0.99, test-time gate 1)")
    budget_weight: float = option(5.0, "weight w of the penalty w·r² on r = E[MACs]/target - 1", min=0)
    budget_lr: float = option(1.0, "ascent rate of the multiplier λ of λ·r after the warm-up (0: penalty only)", min=0)
    warmup: float = option(0.5, "fraction of the steps over which the MACs target falls from 1 to flops_keep",
                           min=0, max=1)
    branches: bool = option(True, "also gate whole droppable residual branches")
    calib_samples: int = option(1024, "training samples used to re-estimate batch-norm statistics of the static "
                                      "network", min=1)
    eval_samples: int = option(2000, "validation samples evaluated after each epoch (0: none)", min=0)
    from_scratch: bool = option(False, "re-initialise the weights instead of starting from the dense model")
    score: Literal["logit", "kappa", "mixed"] = option(
        "logit", "what ranks the nodes for the static plan: the gate logits, the κ̂ sensitivity -d log κ̂/d gate "
                 "(nodes that worsen conditioning go first), or the sum of both, standardised")
    gates: Literal["logits", "network"] = option(
        "logits", "free per-node logits, or a gating network on pooled activations adding batch-dependent offsets")
    gate_hidden: int = option(32, "hidden units of the gating network (gates=network)", min=1)
    cost: Literal["macs", "latency"] = option(
        "macs", "what the budget term counts: MACs, or latency-weighted MACs (each layer's MACs times the target's "
                "predicted marginal time per MAC of that layer, relative to the mean) so that gates close channels "
                "where they buy latency; the final plan still meets the MACs budget")
    latency_target: str | None = option(None, "target profile whose cost model weights the layers (cost=latency; "
                                              "default: the run's target when the pipeline passes one, else host)")

    def __post_init__(self):
        if self.score != "logit" and not self.kappa_every:
            raise ValueError("score=kappa/mixed needs κ̂ estimates: set kappa_every > 0")


class GatedNetwork(GatedModel):
    """The model with hard-concrete gates on every group's channels (and residual branches), plus κ̂."""

    def __init__(self, model: nn.Module, graph, *, branches: bool, gate_init: float, temperature: float,
                 network: GateNetwork | None = None):
        super().__init__(model, graph, gate=HardConcrete(temperature), branches=branches, init=gate_init)
        self.gnet = network  # gates=network: batch-dependent logit offsets (None: free logits)
        self.delta: tuple[torch.Tensor, torch.Tensor] | None = None

    def theta(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The current logits: the free ones plus the gating network's offsets for the last batch."""
        if self.delta is None:
            return self.logits, self.branch_logits
        return self.logits + self.delta[0], self.branch_logits + self.delta[1]

    def sample(self, generator=None):
        t, tb = self.theta()
        return self.gate.sample(t, generator), self.gate.sample(tb, generator)

    def deterministic(self):
        t, tb = self.theta()
        return self.gate.deterministic(t), self.gate.deterministic(tb)

    def probs(self):
        t, tb = self.theta()
        return self.gate.prob_open(t), self.gate.prob_open(tb)

    def trainable_gate_parameters(self) -> list[nn.Parameter]:
        return self.gate_parameters() + (list(self.gnet.parameters()) if self.gnet is not None else [])

    def forward(self, x):
        if self.gnet is not None:
            self.delta = self.gnet(x)
        return super().forward(x)

    @property
    def beta(self) -> float:
        return self.gate.beta

    @property
    def log_alpha(self) -> nn.Parameter:
        return self.logits

    @property
    def branch_log_alpha(self) -> nn.Parameter:
        return self.branch_logits

    def kappa(self, xs: torch.Tensor, z: torch.Tensor, zb: torch.Tensor, proj: torch.Tensor | None):
        """κ̂ of the masked network on ``xs`` (batch norms in eval mode; differentiable in ``z``, ``zb``).

        The Jacobian is taken with respect to every weight of the model (detached copies, so
        the term's gradient reaches only the gates): ``K = J Jᵀ`` with one row per
        (sample, output direction).
        """
        params = {k: v.detach() for k, v in self.model.named_parameters()}

        def f(p, x):  # one sample -> its (projected) outputs
            out = primary_output(self.run(x.unsqueeze(0), z, zb, p)).reshape(-1)  # the task output
            return out @ proj if proj is not None else out

        with bn_eval(self.model), vmap_safe_prelu(self.model):
            return timed_kappa(f, params, xs)

    def kappa_loss_level(self, xs: torch.Tensor, ys: torch.Tensor, z: torch.Tensor, zb: torch.Tensor, task: str,
                         seed: int = 0):
        """κ̂ = L̂/μ̂ of the masked network's task loss on ``(xs, ys)`` (:func:`~.gating.loss_level_kappa`; batch
        norms in eval mode; differentiable in ``z``, ``zb`` through μ̂ only)."""
        params = {k: v.detach() for k, v in self.model.named_parameters()}
        with bn_eval(self.model):
            return loss_level_kappa(lambda p: task_loss(task, self.run(xs, z, zb, p), xs, ys), params, seed=seed)


class PLGatesHook(TrainHook):
    """pl-gates in the training loop: gates as an Adam group, the budget and κ̂ terms, the curves."""

    def __init__(self, net: GatedNetwork, o: PLGatesOptions, ctx: FitContext, proj, dense_macs: float, hist: dict):
        self.net, self.o, self.ctx, self.proj, self.dense = net, o, ctx, proj, dense_macs
        self.hist = hist
        # κ̂ sub-batches come from their own stream: monitoring κ̂ (gamma = 0) leaves the
        # training trajectory bit-for-bit unchanged
        self.kgen = torch.Generator().manual_seed(ctx.seed + 7919)
        self.lam = 0.0
        self.kappa_grads, self.kappa_term = None, 0.0
        self.k0 = None  # first κ̂: the normaliser of the ratio term
        self.scale = None if (o.gamma_calibrate and o.gamma > 0) else 1.0  # c, measured at the first estimate
        self.sens = None  # EMA of d log κ̂ / d gate (nodes, branches)
        self.gparams = net.trainable_gate_parameters()

    def begin(self, schedule: Schedule) -> None:
        self.spe, self.total = schedule.steps_per_epoch, schedule.total_steps
        self.warm = max(1, int(round(self.o.warmup * self.total)))
        self.gate_lr = self.o.gate_lr if self.o.gate_lr is not None else min(1.0, max(0.01, 15.0 / self.warm))
        self.hist["gate_lr"] = self.gate_lr
        self._new_epoch()

    def _new_epoch(self):
        self.sums = {"budget_loss": 0.0, "kappa_loss": 0.0}
        self.kap_s, self.kap_vals = 0.0, []

    def target(self, step: int) -> float:
        return 1.0 - (1.0 - self.ctx.flops_keep) * min(1.0, step / self.warm)

    def params(self) -> list[dict]:
        groups = [{"params": self.net.gate_parameters(), "lr": self.gate_lr, "optimizer": "adam"}]
        if self.net.gnet is not None:  # a network's weights take smaller Adam steps than free logits
            groups.append({"params": list(self.net.gnet.parameters()), "lr": min(self.gate_lr, 0.01),
                           "optimizer": "adam"})
        return groups

    def loss(self, model, batch, step):
        o, h, net = self.o, self.hist, self.net
        xb = batch[0]
        z, zb = net.last
        self.e_macs = net.expected_macs() / self.dense
        self.tgt = self.target(step)
        self.r = self.e_macs / self.tgt - 1.0
        budget = o.budget_weight * self.r * self.r + self.lam * self.r
        if o.kappa_every and step % o.kappa_every == 0:
            self._estimate(xb, batch[1], z, zb, step)
        self.sums["budget_loss"] += float(budget.detach())
        return budget

    def _estimate(self, xb, yb, z, zb, step):
        """One κ̂ estimate; its gradient (γ > 0) and the node sensitivities (score != logit), in one backward."""
        o, h, net = self.o, self.hist, self.net
        sub = torch.randperm(len(xb), generator=self.kgen)[: o.kappa_batch]
        in_loss, sens = o.gamma > 0, o.score != "logit"
        if not in_loss:  # monitoring only: the estimate never enters the loss
            z, zb = z.detach().requires_grad_(sens), zb.detach().requires_grad_(sens)
        if o.kappa_estimator == "loss":
            est = net.kappa_loss_level(xb[sub], yb[sub], z, zb, self.ctx.task, seed=self.ctx.seed + step)
        else:
            est = net.kappa(xb[sub], z, zb, self.proj)
        kv = all_reduce_mean(float(est.kappa.detach()))  # under torchrun: the mean of the ranks' estimates
        if self.k0 is None:
            self.k0 = kv
        if in_loss or sens:
            t_b = time.perf_counter()
            # one backward of log κ̂; the term's gradient follows by the chain rule
            wrt = (self.gparams if in_loss else []) + ([z, zb] if sens else [])
            grads = torch.autograd.grad(torch.log(est.kappa), wrt, allow_unused=True, retain_graph=in_loss)
            grads = [torch.zeros_like(p) if g_ is None else g_.detach().to(p.dtype) for p, g_ in zip(wrt, grads)]
            grads = all_reduce_mean(grads)  # each rank's κ̂ saw its own batch; DDP does not see this gradient
            if in_loss:
                # d f(κ̂) / d log κ̂ for f = κ̂/κ̂₀, log κ̂, κ̂
                unit, dlog = {"ratio": (kv / self.k0, kv / self.k0), "log": (math.log(kv), 1.0),
                              "linear": (kv, kv)}[o.kappa_loss]
                self.unit_grads = [dlog * g_ for g_ in grads[: len(self.gparams)]]
                self.unit_value = unit
                if self.scale is not None:
                    self._apply_scale()
            if sens:
                d = [g_.double().numpy() for g_ in grads[len(wrt) - 2:]]
                self.sens = d if self.sens is None else [0.9 * a + 0.1 * b for a, b in zip(self.sens, d)]
            est.seconds += time.perf_counter() - t_b
        h["kappa"].append(kv)
        h["kappa_step"].append(step)
        h["kappa_lam_min"].append(est.lam_min)
        h["kappa_lam_max"].append(est.lam_max)
        h["kappa_seconds"].append(est.seconds)
        h["kappa_rows"] = est.rows
        self.kap_vals.append(kv)
        self.kap_s += est.seconds
        del est  # free the double-backward graph now

    def _apply_scale(self):
        c = self.o.gamma * self.scale
        self.kappa_grads = [c * g_ for g_ in self.unit_grads]
        self.kappa_term = c * self.unit_value

    def after_backward(self, model, step):
        if self.scale is None and getattr(self, "unit_grads", None) is not None:
            # calibration, once: c = ‖task (+ budget) gradient on the gates‖ / ‖term gradient‖
            task = math.sqrt(sum(float((p.grad ** 2).sum()) for p in self.gparams if p.grad is not None))
            unit = math.sqrt(sum(float((g_ ** 2).sum()) for g_ in self.unit_grads))
            self.scale = task / unit if task > 0 and unit > 0 else 1.0
            self.hist["gamma_scale"] = {"c": self.scale, "task_grad_norm": task, "term_grad_norm": unit,
                                        "step": step}
            self._apply_scale()
        if self.kappa_grads is not None:
            # the latest κ̂ gradient is applied at every step until the next estimate
            # (κ̂ moves slowly; one k-times larger kick would upset Adam's scaling)
            for p, g_ in zip(self.gparams, self.kappa_grads):
                p.grad = g_.clone() if p.grad is None else p.grad + g_
            self.sums["kappa_loss"] += self.kappa_term
        if step >= self.warm:  # ascent on the multiplier once the target is fixed (no wind-up)
            self.lam += self.o.budget_lr * float(self.r.detach())

    def after_step(self, model, step):
        done = step + 1
        if done % max(1, self.spe // 4) == 0 or done == self.total:
            self.hist["expected_macs"].append(float(self.e_macs.detach()))
            self.hist["expected_macs_step"].append(done)
            self.hist["macs_target"].append(self.tgt)

    def after_epoch(self, model, epoch):
        net, h = self.net, self.hist
        q, qb = (t.detach() for t in net.probs())
        for g, v in net.masks.split(q).items():
            h["gate_open_rate"][g].append(float(v.mean()))
        for name, v in zip(net.branch_names, qb):
            h["branch_open_rate"][name].append(float(v))
        rec = {
            "budget_loss": self.sums["budget_loss"] / self.spe,
            "kappa_loss": self.sums["kappa_loss"] / self.spe,
            "expected_macs": float(net.expected_macs().detach() / self.dense),
            "macs_target": self.target(epoch * self.spe),
            "budget_multiplier": self.lam,
            "kappa_mean": float(np.mean(self.kap_vals)) if self.kap_vals else None,
            "kappa_estimates": len(self.kap_vals),
            "kappa_seconds": self.kap_s,
        }
        self._new_epoch()
        return rec


# How the report draws pl-gates' curves (a declaration, see docs/methods/README.md)
PLOTS = {
    "title": "Gate training (measured during the prune stage)",
    "panels": [
        {"title": "κ̂ = L̂/μ̂ of the masked network", "xlabel": "training step", "yscale": "log",
         "series": [{"y": "kappa", "x": "kappa_step", "color": "#d35400"}]},
        {"title": "Budget term: expected fraction of MACs", "xlabel": "training step",
         "series": [{"y": "expected_macs", "x": "expected_macs_step", "label": "expected MACs kept", "color": "#2f6fb3"},
                    {"y": "macs_target", "x": "expected_macs_step", "label": "budget (annealed)", "style": "--",
                     "color": "#8a94ad"}]},
        {"title": "Mean gate-open rate per group", "xlabel": "record",
         "series": [{"y": "gate_open_rate", "per_key": True, "labels": "groups", "linewidth": 1}]},
    ],
}


@register_method("pl-gates")
class PLGates(PruningMethod):
    summary = ("gates trained jointly with the model under a MACs budget and a condition-number (κ = L/μ) "
               "regularizer, then frozen into a static plan (Chen et al., ICLR 2023; reconstruction)")
    options_cls = PLGatesOptions
    trains = True
    plots = PLOTS
    trains_from_scratch = False  # fine-tunes the dense weights with gates (option from_scratch=true re-initialises)

    def __init__(self, **options):
        super().__init__(**options)
        self.trains_from_scratch = bool(self.opts.from_scratch)

    @classmethod
    def quick_options(cls) -> dict:
        return {"epochs": 1, "kappa_every": 4, "kappa_batch": 4, "eval_samples": 100, "calib_samples": 128}

    def own_epochs(self, train_options: dict) -> int:
        """Gate epochs: the ``epochs`` option, else as many as the run trains its dense model; a run that
        trains none (pretrained ``--weights`` with ``--epochs 0``) still needs trained gates: it gets its
        fine-tuning epochs (at least one). The run's epochs come from its config (one default, there)."""
        if self.opts.epochs is not None:
            return int(self.opts.epochs)
        if train_options.get("epochs") is None:
            raise ConfigError("pl-gates: set its `epochs` option or pass the run's train_options['epochs']")
        return int(train_options["epochs"]) or max(1, int(train_options.get("finetune_epochs") or 1))

    # ---------------------------------------------------------------- fit
    def fit(self, model: nn.Module, ctx: FitContext) -> MethodResult:
        o = self.opts
        t_start = time.perf_counter()
        tr = ctx.train_options
        epochs = self.own_epochs(tr)
        lr = o.lr if o.lr is not None else float(ctx.run_option("lr"))
        bs = o.batch_size if o.batch_size is not None else int(ctx.run_option("batch_size"))
        wd = float(ctx.run_option("weight_decay"))
        graph = ctx.graph
        dense_macs = float(graph.dense_cost()["macs"])

        model = working_copy(model, reinitialise=o.from_scratch, seed=ctx.seed)
        net = GatedNetwork(model, graph, branches=o.branches, gate_init=o.gate_init, temperature=o.temperature)
        cost_info = None
        if o.cost == "latency":
            weights, cost_info = self._layer_weights(model, ctx)
            net.cost = ExpectedCost(graph, net.masks.offsets, net.branch_names, weights)
            with torch.no_grad():  # the budget term's unit: the weighted cost of the dense model
                dense_macs = float(net.cost(torch.ones(net.masks.n), torch.ones(len(net.branch_names))))
            ctx.log(f"  pl-gates: latency-weighted budget term ({cost_info['target']}, {cost_info['artifact']}); "
                    f"layer weights " + ", ".join(f"{k} {v:.2f}" for k, v in weights.items())
                    + (f"; unmapped (plain MACs): {', '.join(cost_info['unmapped'])}" if cost_info["unmapped"] else ""))
        if o.gates == "network":
            with torch.random.fork_rng():
                torch.manual_seed(ctx.seed + 104729)
                net.gnet = GateNetwork(torch.as_tensor(ctx.x_train[:1]), net.masks.n, len(net.branch_names),
                                       o.gate_hidden)
        # one random stream for the shuffle and the gate samples, in the order the loop draws them
        net.generator = torch.Generator().manual_seed(ctx.seed)
        with torch.no_grad():
            n_out = int(primary_output(model.eval()(torch.as_tensor(ctx.x_train[:1]))).numel())
        proj = output_projection(n_out, o.kappa_outputs, ctx.seed)
        hist: dict = {
            "options": self.options, "epochs_run": epochs, "lr": lr, "gate_lr": None, "batch_size": bs,
            "kappa": [], "kappa_step": [], "kappa_lam_min": [], "kappa_lam_max": [], "kappa_seconds": [],
            "kappa_in_loss": o.gamma > 0, "kappa_rows": None,
            "expected_macs": [], "expected_macs_step": [], "macs_target": [],
            "gate_open_rate": {g: [] for g in net.masks.groups}, "branch_open_rate": {b: [] for b in net.branch_names},
            "epochs": [], "plots": PLOTS,
        }
        hook = PLGatesHook(net, o, ctx, proj, dense_macs, hist)
        val = (ctx.x_val[: o.eval_samples], ctx.y_val[: o.eval_samples]) if o.eval_samples else None

        def log_epoch(rec):
            kap = rec["kappa_mean"] if rec["kappa_mean"] is not None else float("nan")
            ctx.log(f"  pl-gates epoch {rec['epoch']}/{epochs}: loss {rec['loss']:.3f}, E[MACs] {rec['expected_macs']:.1%} "
                    f"(target {rec['macs_target']:.0%}), κ̂ {kap:.3g}, κ̂ time {rec['kappa_seconds']:.1f}s of "
                    f"{rec['seconds']:.1f}s" + (f", val {rec['val_metric']:.2f}" if "val_metric" in rec else ""))

        h = ctx.train(net, [hook], epochs=epochs, lr=lr, batch_size=bs, weight_decay=wd, val=val,
                      generator=net.generator, on_epoch=log_epoch, label="pl-gates")
        hist["epochs"] = h.to_list()
        hist["kappa_seconds_total"] = float(sum(r["kappa_seconds"] for r in hist["epochs"]))
        hist["train_seconds_total"] = float(sum(r["seconds"] for r in hist["epochs"]))
        hist["kappa_first"] = hook.k0
        hist.setdefault("gamma_scale", {"c": hook.scale} if o.gamma > 0 and hook.scale is not None else None)
        hist["score"], hist["gates"] = o.score, o.gates
        hist["cost"] = {"kind": o.cost, **(cost_info or {})}
        if hook.sens is not None:
            hist["kappa_sensitivity"] = {g: v.tolist() for g, v in
                                         net.masks.split(torch.from_numpy(hook.sens[0])).items()}

        plan, info = self._static_plan(net, ctx, hook.sens)
        hist.update(info)
        net.close()
        model.eval()
        hist["seconds_total"] = time.perf_counter() - t_start
        return MethodResult(plan, model, jsonable(hist))

    layer_weights: dict | None = None  # cost=latency: set to override the cost model's weights (layer -> factor)

    def _layer_weights(self, model: nn.Module, ctx: FitContext) -> tuple[dict, dict]:
        """Per-layer latency weights (cost=latency): :attr:`layer_weights` when set, else the target's cost
        model on the dense graph (:func:`edgeprune.bench.planning.layer_latency_weights`)."""
        names = [lc.name for lc in ctx.graph.layers.values() if lc.kind != "norm"]
        if self.layer_weights is not None:
            w = {n: float(self.layer_weights.get(n, 1.0)) for n in names}
            return w, {"target": "given", "artifact": "-", "source": "given weights", "weights": w,
                       "unmapped": [n for n in names if n not in self.layer_weights]}
        from ..bench.planning import layer_latency_weights
        from ..targets import load_target

        target = self.opts.latency_target or ctx.target or "host"  # an explicit option wins over the run's target
        if isinstance(target, str):
            target = load_target(target)
        w, info = layer_latency_weights(model, ctx.example, target, names)
        info["weights"] = w
        return w, info

    # ------------------------------------------------------- dynamic -> static
    def _static_plan(self, net: GatedNetwork, ctx: FitContext, sens=None):
        o = self.opts
        graph = ctx.graph
        model = net.model
        calib = torch.from_numpy(ctx.x_train[: o.calib_samples])
        info: dict = {}
        if net.gnet is not None:
            # gate statistics on calibration data: the mean offsets over batches of the training size
            bs = o.batch_size if o.batch_size is not None else int(ctx.run_option("batch_size"))
            dn, db, nb = calibration_logits(net.gnet, calib if len(calib) else torch.as_tensor(ctx.x_train[:1]), bs)
            info["gate_network_calibration_batches"] = nb
            info["gate_network_offset_std"] = float(dn.std()) if len(dn) > 1 else 0.0
        with torch.no_grad():
            if net.gnet is not None:
                net.delta = (dn, db)
            la = net.theta()[0].detach()
            q, qb = (t.detach() for t in net.probs())
            z_det, zb_det = (t.detach() for t in net.deterministic())
        dropped = [b for b, p in zip(net.branch_names, qb.tolist()) if p < 0.5]
        node_scores = la.double().numpy()
        if o.score != "logit":
            if sens is None:
                raise ConfigError("pl-gates: score=kappa/mixed needs κ̂ estimates (kappa_every > 0 and enough steps)")
            ks = standardize(-sens[0])  # keep-score: nodes whose gate raises κ̂ go first
            node_scores = ks if o.score == "kappa" else ks + standardize(node_scores)
        scores = {g: v.numpy() for g, v in net.masks.split(torch.from_numpy(node_scores)).items()}
        widths, budget = widths_to_budget(graph, scores, ctx.flops_keep, ctx.width_multiple, dropped)
        plan = plan_from_scores(
            graph, scores, widths, width_multiple=ctx.width_multiple, dropped=dropped, method="pl-gates",
            meta={"flops_keep": ctx.flops_keep, "gamma": o.gamma, "score": o.score, "budget": budget},
        )
        keep = torch.zeros(net.masks.n)
        for g in net.masks.groups:
            idx = plan.keep.get(g, range(graph.groups[g].size))
            keep[net.masks.offsets[g] + torch.as_tensor(list(idx), dtype=torch.long)] = 1.0
        keep_b = torch.tensor([0.0 if b in dropped else 1.0 for b in net.branch_names])

        if o.score == "logit":
            z_fold = z_det * keep
        else:  # kept nodes the gates had closed are reopened at 1 (else they would be dead channels)
            z_fold = torch.where(z_det > 0, z_det, torch.ones_like(z_det)) * keep
        xv = ctx.x_val[: o.eval_samples] if o.eval_samples else ctx.x_val[:0]
        yv = ctx.y_val[: o.eval_samples] if o.eval_samples else ctx.y_val[:0]
        info.update({
            "gate_open_final": {g: v.tolist() for g, v in net.masks.split(q).items()},
            "branch_open_final": dict(zip(net.branch_names, qb.tolist())),
            "dropped_branches": dropped,
            "budget": budget,
            "nodes_closed_by_gates": int((z_det == 0).sum()),
            "nodes_removed_by_plan": int((keep == 0).sum()),
            "closed_but_kept": int(((z_det == 0) & (keep == 1)).sum()),
        })
        if len(xv):
            net.eval()
            info["gated_val_metric"] = evaluate(net, xv, yv, ctx.task, ctx.metric)  # the dynamic net, test-time gates
            net.delta = None

        # fold the test-time gate values of kept nodes into the weights; removed nodes get 0
        net.eval()
        with torch.no_grad():
            ref_out = net.run(calib[:256], z_fold, zb_det * keep_b) if len(calib) else None
            info["unfolded_branch_scales"] = net.fold_(z_fold, zb_det, dropped)
            if ref_out is not None:
                static_out = net.run(calib[:256], keep, keep_b)
                info["fold_max_abs_diff"] = max(float((s - r).abs().max())  # over every output
                                                for s, r in zip(output_list(static_out), output_list(ref_out)))
        if o.calib_samples and has_batchnorm(model):
            recalibrate_bn(net, calib, keep, keep_b)
            info["bn_recalibrated_on"] = int(len(calib))
        if len(xv):
            static = StaticView(net, keep, keep_b).eval()
            info["static_val_metric"] = evaluate(static, xv, yv, ctx.task, ctx.metric)
        cost = plan.predicted_cost(graph)  # exact (kept index sets), the figure the pipeline reports
        info["plan_macs_kept"] = cost["macs"] / graph.dense_cost()["macs"]
        rel = cost["macs"] / budget["goal"] - 1 if budget["goal"] else 0.0
        budget.update({"macs": int(cost["macs"]), "rel_error": float(rel), "within_tol": bool(abs(rel) <= 0.05)})
        if not budget["within_tol"]:
            ctx.log(f"  pl-gates: the plan keeps {info['plan_macs_kept']:.1%} of MACs, more than 5% away from the "
                    f"requested {ctx.flops_keep:.0%} (width multiple / minimum widths)")
        ctx.log(
            f"  pl-gates plan: {info['nodes_removed_by_plan']} nodes removed ({info['nodes_closed_by_gates']} closed by gates), "
            f"{len(dropped)} branch(es) dropped, MACs kept {info['plan_macs_kept']:.1%} (asked {ctx.flops_keep:.0%})"
            + (f", val gated {info['gated_val_metric']:.2f} -> static {info['static_val_metric']:.2f}" if len(xv) else "")
        )
        return plan, info
