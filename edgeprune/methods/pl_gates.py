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

import copy
import math
import time

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ..errors import ConfigError
from ..surgery import plan_from_scores
from ..surgery.masking import BranchScales, ChannelMasks
from ..train import evaluate, task_loss
from .base import FitContext, MethodResult, PruningMethod, register_method
from .gating import (
    ExpectedCost,
    bn_eval,
    hc_deterministic,
    hc_prob_open,
    hc_sample,
    output_projection,
    timed_kappa,
    widths_to_budget,
)

# name -> (default, validator, help). ``None`` defaults are taken from the run (FitContext).
OPTIONS: dict[str, tuple] = {
    "gamma": (0.05, "float>=0", "weight γ of the condition-number term (0 disables it)"),
    "kappa_loss": ("log", ("log", "linear"), "term added to the loss: γ·log κ̂ (scale-free) or γ·κ̂ (the paper's form)"),
    "kappa_every": (20, "int>=0", "estimate κ̂ every k steps (0: never, not even for the log)"),
    "kappa_batch": (8, "int>=2", "samples in the κ̂ sub-batch"),
    "kappa_outputs": (10, "int>=1", "output directions per sample in the tangent kernel: all outputs when the model "
                                    "has at most this many, else a fixed random orthonormal projection"),
    "epochs": (None, "int>=0", "epochs of joint gate + weight training (default: the run's train.epochs, or "
                               "train.finetune_epochs (at least 1) when train.epochs is 0)"),
    "lr": (None, "float>0", "peak learning rate of the weights (default: the run's train.lr)"),
    "batch_size": (None, "int>=1", "mini-batch size (default: the run's train.batch_size)"),
    "gate_lr": (None, "float>0", "Adam learning rate of the gate logits (default: 15 / warm-up steps, "
                                 "clipped to [0.01, 1], so that logits can cross the decision boundary during the warm-up)"),
    "temperature": (2.0 / 3.0, "float>0", "hard-concrete temperature β"),
    "gate_init": (3.0, "float", "initial gate logit (3.0: P(open) ≈ 0.99, test-time gate 1)"),
    "budget_weight": (5.0, "float>=0", "weight w of the penalty w·r² on r = E[MACs]/target - 1"),
    "budget_lr": (1.0, "float>=0", "ascent rate of the multiplier λ of λ·r after the warm-up (0: penalty only)"),
    "warmup": (0.5, "fraction", "fraction of the steps over which the MACs target falls from 1 to flops_keep"),
    "branches": (True, "bool", "also gate whole droppable residual branches"),
    "calib_samples": (1024, "int>=1", "training samples used to re-estimate batch-norm statistics of the static network"),
    "eval_samples": (2000, "int>=0", "validation samples evaluated after each epoch (0: none)"),
    "from_scratch": (False, "bool", "re-initialise the weights instead of starting from the dense model"),
}


def _check(name: str, value, rule):
    def bad(what):
        raise ConfigError(f"pl-gates option {name}={value!r}: expected {what}")

    if value is None and OPTIONS[name][0] is None:
        return None
    if isinstance(rule, tuple):
        if value not in rule:
            bad(f"one of {list(rule)}")
        return value
    if rule == "bool":
        if not isinstance(value, bool):
            bad("true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        bad("a number")
    if rule.startswith("int"):
        if float(value) != int(value):
            bad("an integer")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            bad("a finite number")
    if rule.endswith(">=0") and value < 0:
        bad("a value >= 0")
    if rule.endswith(">=1") and value < 1:
        bad("a value >= 1")
    if rule.endswith(">=2") and value < 2:
        bad("a value >= 2")
    if rule.endswith(">0") and value <= 0:
        bad("a value > 0")
    if rule == "fraction" and not 0.0 <= value <= 1.0:
        bad("a fraction in [0, 1]")
    return value


class GatedNetwork(nn.Module):
    """The model with hard-concrete gates on every group's channels (and residual branches).

    ``forward(x)`` samples gates in training mode and uses the test-time gate values in
    eval mode; :meth:`run` takes explicit gate values (0 = node removed).
    """

    def __init__(self, model: nn.Module, graph, *, branches: bool, gate_init: float, temperature: float):
        super().__init__()
        self.model = model
        self.graph = graph
        self.beta = float(temperature)
        self.masks = ChannelMasks(model, graph)
        self.log_alpha = nn.Parameter(torch.full((self.masks.n,), float(gate_init)))
        self.branch_names = list(graph.branches) if branches else []
        self.branch_log_alpha = nn.Parameter(torch.full((len(self.branch_names),), float(gate_init)))
        self.scales = BranchScales(model, self.branch_names)
        self.cost = ExpectedCost(graph, self.masks.offsets, self.branch_names)

    # gates ---------------------------------------------------------------
    def gate_parameters(self) -> list[nn.Parameter]:
        return [self.log_alpha, self.branch_log_alpha]

    def sample(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return hc_sample(self.log_alpha, self.beta, generator), hc_sample(self.branch_log_alpha, self.beta, generator)

    def deterministic(self) -> tuple[torch.Tensor, torch.Tensor]:
        return hc_deterministic(self.log_alpha), hc_deterministic(self.branch_log_alpha)

    def probs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return hc_prob_open(self.log_alpha, self.beta), hc_prob_open(self.branch_log_alpha, self.beta)

    def expected_macs(self) -> torch.Tensor:
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
        z, zb = self.sample() if self.training else self.deterministic()
        return self.run(x, z, zb)

    def kappa(self, xs: torch.Tensor, z: torch.Tensor, zb: torch.Tensor, proj: torch.Tensor | None):
        """κ̂ of the masked network on ``xs`` (batch norms in eval mode; differentiable in ``z``, ``zb``).

        The Jacobian is taken with respect to every weight of the model (detached copies, so
        the term's gradient reaches only the gates): ``K = J Jᵀ`` with one row per
        (sample, output direction).
        """
        params = {k: v.detach() for k, v in self.model.named_parameters()}

        def f(p, x):  # one sample -> its (projected) outputs
            out = self.run(x.unsqueeze(0), z, zb, p).reshape(-1)
            return out @ proj if proj is not None else out

        with bn_eval(self.model):
            return timed_kappa(f, params, xs)

    def close(self) -> None:
        self.scales.remove()


@register_method("pl-gates")
class PLGates(PruningMethod):
    summary = ("gates trained jointly with the model under a MACs budget and a condition-number (κ = L/μ) "
               "regularizer, then frozen into a static plan (Chen et al., ICLR 2023; reconstruction)")
    trains_from_scratch = False  # fine-tunes the dense weights with gates (option from_scratch=true re-initialises)

    def __init__(self, **options):
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"method 'pl-gates' has no option(s) {unknown}; options: {sorted(OPTIONS)}")
        self.options = {k: d for k, (d, _, _) in OPTIONS.items()}
        for k, v in options.items():
            self.options[k] = _check(k, v, OPTIONS[k][1])
        self.trains_from_scratch = bool(self.options["from_scratch"])

    def own_epochs(self, train_options: dict) -> int:
        """Gate epochs: the ``epochs`` option, else as many as the run trains its dense model; a run that
        trains none (pretrained ``--weights`` with ``--epochs 0``) still needs trained gates: it gets its
        fine-tuning epochs (at least one)."""
        if self.options["epochs"] is not None:
            return int(self.options["epochs"])
        return int(train_options.get("epochs", 10)) or max(1, int(train_options.get("finetune_epochs") or 1))

    # ---------------------------------------------------------------- fit
    def fit(self, model: nn.Module, ctx: FitContext) -> MethodResult:
        o = dict(self.options)
        t_start = time.perf_counter()
        tr = ctx.train_options
        epochs = self.own_epochs(tr)
        lr = o["lr"] if o["lr"] is not None else float(tr.get("lr", 0.01))
        bs = o["batch_size"] if o["batch_size"] is not None else int(tr.get("batch_size", 64))
        wd = float(tr.get("weight_decay", 5e-4))
        graph = ctx.graph
        dense_macs = float(graph.dense_cost()["macs"])
        gen = torch.Generator().manual_seed(ctx.seed)
        # κ̂ sub-batches come from their own stream: monitoring κ̂ (gamma = 0) leaves the
        # training trajectory bit-for-bit unchanged
        kgen = torch.Generator().manual_seed(ctx.seed + 7919)

        model = copy.deepcopy(model)
        if o["from_scratch"]:
            with torch.random.fork_rng():
                torch.manual_seed(ctx.seed)
                for m in model.modules():
                    if hasattr(m, "reset_parameters"):
                        m.reset_parameters()
        net = GatedNetwork(model, graph, branches=o["branches"], gate_init=o["gate_init"], temperature=o["temperature"])
        with torch.no_grad():
            n_out = int(model.eval()(torch.as_tensor(ctx.x_train[:1])).numel())
        proj = output_projection(n_out, o["kappa_outputs"], ctx.seed)

        opt_w = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd, nesterov=True)
        n = len(ctx.x_train)
        spe = max(1, math.ceil(n / bs))
        total = epochs * spe
        warm = max(1, int(round(o["warmup"] * total)))
        gate_lr = o["gate_lr"] if o["gate_lr"] is not None else min(1.0, max(0.01, 15.0 / warm))
        opt_g = torch.optim.Adam(net.gate_parameters(), lr=gate_lr)
        cosine = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / max(1, total)))  # noqa: E731
        scheds = [torch.optim.lr_scheduler.LambdaLR(opt, cosine) for opt in (opt_w, opt_g)]

        def target(step: int) -> float:
            return 1.0 - (1.0 - ctx.flops_keep) * min(1.0, step / warm)

        xt, yt = torch.from_numpy(ctx.x_train), torch.from_numpy(ctx.y_train)
        xv = ctx.x_val[: o["eval_samples"]] if o["eval_samples"] else None
        yv = ctx.y_val[: o["eval_samples"]] if o["eval_samples"] else None
        hist: dict = {
            "options": {k: v for k, v in o.items()}, "epochs_run": epochs, "lr": lr, "gate_lr": gate_lr, "batch_size": bs,
            "kappa": [], "kappa_step": [], "kappa_lam_min": [], "kappa_lam_max": [], "kappa_seconds": [],
            "kappa_in_loss": o["gamma"] > 0, "kappa_rows": None,
            "expected_macs": [], "expected_macs_step": [], "macs_target": [],
            "gate_open_rate": {g: [] for g in net.masks.groups}, "branch_open_rate": {b: [] for b in net.branch_names},
            "epochs": [],
        }
        every = o["kappa_every"]
        step = 0
        lam = 0.0
        gate_params = net.gate_parameters()
        kappa_grads, kappa_term = None, 0.0
        for epoch in range(epochs):
            net.train()
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=gen)
            sums = {"loss": 0.0, "budget_loss": 0.0, "kappa_loss": 0.0}
            kap_s, kap_vals = 0.0, []
            for b in range(spe):
                idx = perm[b * bs : (b + 1) * bs]
                xb, yb = xt[idx], yt[idx]
                opt_w.zero_grad(set_to_none=True)
                opt_g.zero_grad(set_to_none=True)
                z, zb = net.sample(gen)
                out = net.run(xb, z, zb)
                loss = task_loss(ctx.task, out, xb, yb)
                e_macs = net.expected_macs() / dense_macs
                tgt = target(step)
                r = e_macs / tgt - 1.0
                budget = o["budget_weight"] * r * r + lam * r
                if every and step % every == 0:
                    sub = torch.randperm(len(xb), generator=kgen)[: o["kappa_batch"]]
                    if o["gamma"] > 0:
                        est = net.kappa(xb[sub], z, zb, proj)
                        term = o["gamma"] * (torch.log(est.kappa) if o["kappa_loss"] == "log" else est.kappa)
                        t_b = time.perf_counter()
                        # gradient of the κ̂ term: it reaches only the gate logits (the Jacobian is
                        # taken at detached weights); timed as part of κ̂'s cost
                        kappa_grads = torch.autograd.grad(term, gate_params, retain_graph=True, allow_unused=True)
                        kappa_grads = [torch.zeros_like(p) if g_ is None else g_.detach()
                                       for p, g_ in zip(gate_params, kappa_grads)]
                        est.seconds += time.perf_counter() - t_b
                        kappa_term = float(term.detach())
                        del term  # free the double-backward graph now
                    else:  # monitoring only: the estimate never enters the loss
                        est = net.kappa(xb[sub], z.detach(), zb.detach(), proj)
                    est.kappa = est.kappa.detach()
                    kv = float(est.kappa)
                    hist["kappa"].append(kv)
                    hist["kappa_step"].append(step)
                    hist["kappa_lam_min"].append(est.lam_min)
                    hist["kappa_lam_max"].append(est.lam_max)
                    hist["kappa_seconds"].append(est.seconds)
                    hist["kappa_rows"] = est.rows
                    kap_vals.append(kv)
                    kap_s += est.seconds
                (loss + budget).backward()
                if kappa_grads is not None:
                    # the latest κ̂ gradient is applied at every step until the next estimate
                    # (κ̂ moves slowly; one k-times larger kick would upset Adam's scaling)
                    for p, g_ in zip(gate_params, kappa_grads):
                        p.grad = g_.clone() if p.grad is None else p.grad + g_
                    sums["kappa_loss"] += kappa_term
                if step >= warm:  # ascent on the multiplier once the target is fixed (no wind-up)
                    lam += o["budget_lr"] * float(r.detach())
                opt_w.step()
                opt_g.step()
                for s in scheds:
                    s.step()
                sums["loss"] += float(loss.detach())
                sums["budget_loss"] += float(budget.detach())
                step += 1
                if step % max(1, spe // 4) == 0 or step == total:
                    hist["expected_macs"].append(float(e_macs.detach()))
                    hist["expected_macs_step"].append(step)
                    hist["macs_target"].append(tgt)
                if ctx.progress:
                    ctx.progress("pl-gates", step, total)
            secs = time.perf_counter() - t0
            q, qb = (t.detach() for t in net.probs())
            for g, v in net.masks.split(q).items():
                hist["gate_open_rate"][g].append(float(v.mean()))
            for name, v in zip(net.branch_names, qb):
                hist["branch_open_rate"][name].append(float(v))
            rec = {
                "epoch": epoch + 1,
                "loss": sums["loss"] / spe,
                "budget_loss": sums["budget_loss"] / spe,
                "kappa_loss": sums["kappa_loss"] / spe,
                "expected_macs": float(net.expected_macs().detach() / dense_macs),
                "macs_target": target(step),
                "budget_multiplier": lam,
                "kappa_mean": float(np.mean(kap_vals)) if kap_vals else None,
                "kappa_estimates": len(kap_vals),
                "kappa_seconds": kap_s,
                "seconds": secs,
            }
            if xv is not None and len(xv):
                net.eval()
                rec["val_metric"] = evaluate(net, xv, yv, ctx.task)
            hist["epochs"].append(rec)
            ctx.log(
                f"  pl-gates epoch {epoch + 1}/{epochs}: loss {rec['loss']:.3f}, E[MACs] {rec['expected_macs']:.1%} "
                f"(target {rec['macs_target']:.0%}), κ̂ {rec['kappa_mean'] if rec['kappa_mean'] is not None else float('nan'):.3g}, "
                f"κ̂ time {kap_s:.1f}s of {secs:.1f}s"
                + (f", val {rec['val_metric']:.2f}" if "val_metric" in rec else "")
            )
        hist["kappa_seconds_total"] = float(sum(r["kappa_seconds"] for r in hist["epochs"]))
        hist["train_seconds_total"] = float(sum(r["seconds"] for r in hist["epochs"]))

        plan, info = self._static_plan(net, ctx)
        hist.update(info)
        net.close()
        model.eval()
        hist["seconds_total"] = time.perf_counter() - t_start
        return MethodResult(plan, model, _jsonable(hist))

    # ------------------------------------------------------- dynamic -> static
    def _static_plan(self, net: GatedNetwork, ctx: FitContext):
        o = self.options
        graph = ctx.graph
        model = net.model
        with torch.no_grad():
            la = net.log_alpha.detach()
            q, qb = (t.detach() for t in net.probs())
            z_det, zb_det = (t.detach() for t in net.deterministic())
        dropped = [b for b, p in zip(net.branch_names, qb.tolist()) if p < 0.5]
        scores = {g: v.numpy().astype(np.float64) for g, v in net.masks.split(la).items()}
        widths, budget = widths_to_budget(graph, scores, ctx.flops_keep, ctx.width_multiple, dropped)
        plan = plan_from_scores(
            graph, scores, widths, width_multiple=ctx.width_multiple, dropped=dropped, method="pl-gates",
            meta={"flops_keep": ctx.flops_keep, "gamma": o["gamma"], "budget": budget},
        )
        keep = torch.zeros(net.masks.n)
        for g in net.masks.groups:
            idx = plan.keep.get(g, range(graph.groups[g].size))
            keep[net.masks.offsets[g] + torch.as_tensor(list(idx), dtype=torch.long)] = 1.0
        keep_b = torch.tensor([0.0 if b in dropped else 1.0 for b in net.branch_names])

        calib = torch.from_numpy(ctx.x_train[: o["calib_samples"]])
        xv = ctx.x_val[: o["eval_samples"]] if o["eval_samples"] else ctx.x_val[:0]
        yv = ctx.y_val[: o["eval_samples"]] if o["eval_samples"] else ctx.y_val[:0]
        info: dict = {
            "gate_open_final": {g: v.tolist() for g, v in net.masks.split(q).items()},
            "branch_open_final": dict(zip(net.branch_names, qb.tolist())),
            "dropped_branches": dropped,
            "budget": budget,
            "nodes_closed_by_gates": int((z_det == 0).sum()),
            "nodes_removed_by_plan": int((keep == 0).sum()),
            "closed_but_kept": int(((z_det == 0) & (keep == 1)).sum()),
        }
        if len(xv):
            net.eval()
            info["gated_val_metric"] = evaluate(net, xv, yv, ctx.task)  # the dynamic net, test-time gates

        # fold the test-time gate values of kept nodes into the weights; removed nodes get 0
        net.eval()
        with torch.no_grad():
            ref_out = net.run(calib[:256], z_det * keep, zb_det * keep_b) if len(calib) else None
            net.masks.fold_(model, z_det * keep)
            unfolded = []
            for b, s in zip(net.branch_names, zb_det.tolist()):
                if b not in dropped and s != 1.0 and not _fold_branch_scale(model.get_submodule(b), s):
                    unfolded.append(b)
            info["unfolded_branch_scales"] = unfolded
            if ref_out is not None:
                static_out = net.run(calib[:256], keep, keep_b)
                info["fold_max_abs_diff"] = float((static_out - ref_out).abs().max())
        if o["calib_samples"] and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            _recalibrate_bn(net, calib, keep, keep_b)
            info["bn_recalibrated_on"] = int(len(calib))
        if len(xv):
            static = _StaticView(net, keep, keep_b).eval()
            info["static_val_metric"] = evaluate(static, xv, yv, ctx.task)
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


class _StaticView(nn.Module):
    """The gated network with fixed 0/1 gates (the static plan), for evaluation."""

    def __init__(self, net: GatedNetwork, keep: torch.Tensor, keep_b: torch.Tensor):
        super().__init__()
        self.net = net
        self.keep, self.keep_b = keep, keep_b

    def forward(self, x):
        return self.net.run(x, self.keep, self.keep_b)


@torch.no_grad()
def _recalibrate_bn(net: GatedNetwork, x: torch.Tensor, keep: torch.Tensor, keep_b: torch.Tensor, batch: int = 256) -> None:
    """Re-estimate batch-norm running statistics of the static network (cumulative average)."""
    bns = [m for m in net.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.model.train()
    try:
        for i in range(0, len(x), batch):
            net.run(x[i : i + batch], keep, keep_b)
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        net.model.eval()


def _fold_branch_scale(block: nn.Module, s: float) -> bool:
    """Scale a residual branch's output by ``s`` through its last layer (BN / conv / linear)."""
    from ..surgery import branch_output_module

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


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
