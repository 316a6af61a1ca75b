"""``soft-coef``: component-aware structured pruning with soft coefficients (Sundaram et al. 2025).

Each coupled group ``g`` gets a coefficient ``c_g`` in [0, 1], the fraction of its channels
removed (the lowest L1, or L2, norms inside the group go first; whole channels, rounded to the
width multiple). The coefficients maximise an application metric (higher is better: accuracy,
PSNR, the run's metric or a user callable) measured on a validation slice, subject to
``|rho(c) - rho*| <= eps`` on the removed fraction of parameters or MACs. Groups are organised
in components (the model's top-level children, or user prefixes); each component has a floor,
the fraction of every one of its groups that always stays, so that no component is emptied to
save another. Optimisers: ``gradient`` (projected ascent, central differences), ``grid``, and
the baselines ``uniform``, ``random`` and ``l1prop``. See docs/methods/soft-coef.md.
"""

from __future__ import annotations

import copy
import pickle
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..surgery import plan_from_scores
from ..surgery.masking import ChannelMasks
from . import coef_search as cs
from .base import FitContext, MethodResult, PruningMethod, register_method
from .gates import recalibrate_batchnorm
from .magnitude import group_scores

OPTIMIZERS = ("gradient", "grid", "uniform", "random", "l1prop")
TASK_METRIC = {"classification": "accuracy", "reconstruction": "psnr"}


@dataclass
class SoftCoefOptions:
    optimizer: str = field(default="gradient", metadata={"help": f"one of {', '.join(OPTIMIZERS)}"})
    constraint: str = field(default="macs", metadata={"help": "what the sparsity counts: macs or params"})
    sparsity: float | None = field(default=None, metadata={
        "help": "rho*, the removed fraction of the constrained quantity (default 1 - flops_keep, the budget's)"})
    eps: float = field(default=0.02, metadata={"help": "band half-width: |rho - rho*| <= eps"})
    norm: int = field(default=1, metadata={"help": "channel ranking inside a group: 1 (L1) or 2 (L2)"})
    components: list | str | None = field(default=None, metadata={
        "help": "module-name prefixes of the components, e.g. 'encoder,decoder' (default: top-level children)"})
    floor: float = field(default=0.1, metadata={
        "help": "fraction of every group's channels each component keeps at least (0: down to one channel)"})
    component_floors: dict | None = field(default=None, metadata={"help": "{prefix: floor} overriding floor"})
    metric: object = field(default=None, metadata={
        "help": "metric name / file.py:function(outputs, targets), or a callable metric(model, (x, y)) "
                "(default: the run's metric, else the task's)"})
    model_metric: str | None = field(default=None, metadata={"help": "file.py:function(model, (x, y)) -> float"})
    val_samples: int = field(default=1000, metadata={"help": "validation samples per metric evaluation (0: all)"})
    grid_step: float = field(default=0.1, metadata={"help": "grid spacing of the coefficients"})
    max_evals: int = field(default=500, metadata={"help": "grid: refuse grids needing more metric evaluations"})
    iters: int = field(default=6, metadata={"help": "gradient: ascent iterations (2 x groups + 1 evaluations each)"})
    patience: int = field(default=3, metadata={"help": "gradient: stop after this many iterations without a new best"})
    delta: float = field(default=0.1, metadata={"help": "gradient: central-difference half-step (>= one channel)"})
    step: float = field(default=0.2, metadata={"help": "gradient: first step length in coefficient units"})
    decay: float = field(default=0.7, metadata={"help": "gradient: step length multiplier per iteration"})
    bn_calibration: int = field(default=0, metadata={
        "help": "training samples to re-estimate BatchNorm statistics on before every evaluation (0: off); the "
                "returned weights carry the statistics re-estimated for the final plan"})
    start: str = field(default="uniform", metadata={"help": "gradient: start point, uniform or l1prop"})
    workers: int = field(default=1, metadata={
        "help": "grid: evaluate the grid's points in this many spawned processes (1: in this process); same result"})

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.constraint not in ("macs", "params"):
            raise ValueError(f"constraint must be macs or params, got {self.constraint!r}")
        if self.sparsity is not None and not 0.0 < float(self.sparsity) < 1.0:
            raise ValueError(f"sparsity must be in (0, 1), got {self.sparsity}")
        if not 0.0 < self.eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {self.eps}")
        if self.norm not in (1, 2):
            raise ValueError(f"norm must be 1 or 2, got {self.norm}")
        if not 0.0 <= self.floor < 1.0 or any(not 0.0 <= float(v) < 1.0 for v in (self.component_floors or {}).values()):
            raise ValueError("floors must be in [0, 1)")
        if not 0.0 < self.grid_step <= 1.0 or self.delta <= 0 or self.step <= 0 or not 0 < self.decay <= 1:
            raise ValueError("grid_step in (0, 1], delta > 0, step > 0 and decay in (0, 1] are required")
        if self.bn_calibration < 0:
            raise ValueError(f"bn_calibration must be >= 0, got {self.bn_calibration}")
        if self.iters < 0 or self.patience < 1 or self.max_evals < 1 or self.val_samples < 0:
            raise ValueError("iters >= 0, patience >= 1, max_evals >= 1 and val_samples >= 0 are required")
        if int(self.workers) < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.start not in ("uniform", "l1prop"):
            raise ValueError(f"start must be uniform or l1prop, got {self.start!r}")
        if isinstance(self.components, str):
            self.components = [s.strip() for s in self.components.split(",") if s.strip()]


def component_of(group: str, prefixes: list[str]) -> str:
    """The longest prefix (a module name or one of its parents) that contains ``group``'s root layer."""
    best = ""
    for p in prefixes:
        if (group == p or group.startswith(p + ".")) and len(p) > len(best):
            best = p
    return best


def model_metric_fn(opts: SoftCoefOptions, ctx: FitContext):
    """``(model, x, y) -> float`` for the options and the run: a (model, data) callable or an (outputs, targets) one."""
    from ..metrics import get_metric
    from ..train import predict

    if opts.model_metric:
        from ..imports import load_callable

        fn = load_callable(opts.model_metric, what="metric")
        return lambda model, x, y: float(fn(model, (x, y))), getattr(fn, "__name__", "model_metric")
    if callable(opts.metric):
        return lambda model, x, y: float(opts.metric(model, (x, y))), getattr(opts.metric, "__name__", "metric")
    name = opts.metric or getattr(ctx, "metric", None) or TASK_METRIC.get(ctx.task, "accuracy")
    out_fn = get_metric(name)

    def run(model, x, y):
        return float(out_fn(predict(model, x), x if ctx.task == "reconstruction" else y))

    return run, name


def _norms(model: nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate(model: nn.Module, x: np.ndarray, batch_size: int = 128) -> None:
    """Re-estimate BatchNorm running statistics of ``model`` on ``x`` (cumulative average), then eval mode.

    Removing channels shifts the statistics of the layers that consumed them; without this a pruned
    BN network is judged (and the coefficients chosen) on stale statistics."""
    recalibrate_batchnorm(model, model, x, batch_size)


@register_method("soft-coef")
class SoftCoef(PruningMethod):
    summary = "soft per-group pruning coefficients optimised for the task metric under a sparsity band (gradient/grid)"
    options_cls = SoftCoefOptions

    @classmethod
    def quick_options(cls) -> dict:
        return {"iters": 2, "val_samples": 200, "grid_step": 0.25, "max_evals": 200}

    # ------------------------------------------------------------------ setup
    def problem(self, model: nn.Module, ctx: FitContext) -> tuple[cs.Problem, dict]:
        o, graph = self.opts, ctx.graph
        names = list(graph.groups)
        if not names:
            raise ConfigError("soft-coef: the model has no prunable coupled group")
        prefixes = o.components or [n for n, _ in model.named_children()]
        comp = {g: component_of(g, prefixes) for g in names}
        floors = {p: float(o.floor) for p in prefixes}
        for p, v in (o.component_floors or {}).items():
            if p not in floors:
                raise ConfigError(f"soft-coef: component_floors names {p!r}, not one of the components {prefixes}")
            floors[p] = float(v)
        sizes = np.array([graph.groups[g].size for g in names], dtype=float)
        keep_min = np.array([max(floors.get(comp[g], o.floor) * s, 1.0) for g, s in zip(names, sizes)])
        hi = 1.0 - np.ceil(keep_min - 1e-9) / sizes
        target = float(o.sparsity) if o.sparsity is not None else 1.0 - float(ctx.flops_keep)
        p = cs.Problem(names, sizes, np.zeros(len(names)), hi, cs.CostTable(graph, names), o.constraint, target,
                       o.eps, max(1, int(ctx.width_multiple)))
        return p, comp

    def fit(self, model: nn.Module, ctx: FitContext) -> MethodResult:
        o = self.opts
        t0 = time.perf_counter()
        model = model.eval()
        p, comp = self.problem(model, ctx)
        scores = group_scores(model, ctx.graph, o.norm)
        n = len(ctx.x_val) if o.val_samples == 0 else min(o.val_samples, len(ctx.x_val))
        x, y = ctx.x_val[:n], ctx.y_val[:n]
        fn, metric_name = model_metric_fn(o, ctx)
        masks = ChannelMasks(model, ctx.graph, p.names)
        work = copy.deepcopy(model).eval()  # the masked copy: reset from ``dense`` before every evaluation
        dense = {k: v.detach().clone() for k, v in model.state_dict().items()}

        def plan_for(widths):
            return plan_from_scores(ctx.graph, scores, widths, width_multiple=p.width_multiple)

        def mask_of(widths):
            plan = plan_for(widths)
            z = torch.zeros(masks.n)
            for g in p.names:
                idx = plan.keep.get(g, range(ctx.graph.groups[g].size))
                z[masks.offsets[g] + torch.as_tensor(list(idx), dtype=torch.long)] = 1.0
            return z

        def evaluate(widths):
            return _masked_metric(work, dense, masks, mask_of(widths), x_cal, fn, x, y)

        x_cal = ctx.x_train[: o.bn_calibration]
        p.evaluate = evaluate
        dense_metric = fn(model, x, y)
        log = ctx.log
        log(f"soft-coef ({o.optimizer}): {len(p.names)} groups in {len(set(comp.values()))} component(s), "
            f"{o.constraint} sparsity {p.target:.1%} ± {o.eps:.1%}, metric {metric_name} on {n} validation samples "
            f"(dense {dense_metric:.4g})")
        extra: dict = {}
        if o.workers > 1 and o.optimizer != "grid":
            log(f"soft-coef: workers={o.workers} applies to optimizer=grid only; {o.optimizer} runs in this process")
        if o.optimizer == "gradient":
            start = self._l1prop(p, scores, ctx.graph) if o.start == "l1prop" else cs.uniform(p)
            c, extra = cs.gradient_ascent(p, start, iters=o.iters, delta=o.delta, step=o.step, decay=o.decay,
                                          patience=o.patience, log=log)
        elif o.optimizer == "grid":
            payload = _pool_payload(o, ctx, model, masks, x, y, x_cal) if o.workers > 1 else None
            if o.workers > 1 and payload is None:
                log(f"soft-coef: the metric {metric_name!r} or the model cannot be pickled for worker processes (a "
                    "function defined inside another, a lambda: give it as file.py:function); the grid runs in this "
                    "process")
            with _GridPool(payload, o.workers) as pool:
                many = (lambda ws: pool.map([mask_of(w) for w in ws])) if payload is not None else None
                c, extra = cs.grid_search(p, step=o.grid_step, max_evals=o.max_evals, log=log, evaluate_many=many)
            if payload is not None:
                extra["workers"] = int(o.workers)
        elif o.optimizer == "uniform":
            c = cs.uniform(p)
        elif o.optimizer == "random":
            c = cs.random_feasible(p, np.random.default_rng(ctx.seed))
        else:
            c = self._l1prop(p, scores, ctx.graph)
        final = p.metric(c)
        widths = p.widths(c)
        if o.bn_calibration and _norms(model):
            evaluate(widths)  # ``work`` now holds the statistics of the final plan: hand them over
            stats = {k: v for k, v in work.state_dict().items() if "running_" in k or "num_batches" in k}
            model = copy.deepcopy(model)
            model.load_state_dict({**dense, **stats})
        plan = plan_for(widths)
        exact, dense_cost = plan.predicted_cost(ctx.graph), ctx.graph.dense_cost()
        rho_plan = 1.0 - exact[o.constraint] / dense_cost[o.constraint]
        history = {
            "optimizer": o.optimizer, "metric": metric_name, "constraint": o.constraint, "target": p.target,
            "eps": o.eps, "rho": rho_plan, "feasible": bool(abs(rho_plan - p.target) <= o.eps + 1e-9),
            "dense_metric": dense_metric, "val_metric": final, "val_samples": n, "evaluations": p.evaluations,
            "seconds": time.perf_counter() - t0,
            "coefficients": {g: float(v) for g, v in zip(p.names, c)}, "widths": widths,
            "components": comp, "floors": {g: float(1 - h) for g, h in zip(p.names, p.hi)},
            "trace": [list(t) for t in p.trace], **extra,
        }
        plan.method = self.name
        plan.meta = {"flops_keep": ctx.flops_keep, "soft_coef": {k: history[k] for k in (
            "optimizer", "metric", "constraint", "target", "eps", "rho", "val_metric", "evaluations", "coefficients")},
            "options": {k: v for k, v in asdict(o).items() if not callable(v)}}
        log(f"soft-coef ({o.optimizer}): {metric_name} {final:.4g} (dense {dense_metric:.4g}) at {o.constraint} "
            f"sparsity {rho_plan:.1%} after {p.evaluations} evaluations, {history['seconds']:.1f} s")
        return MethodResult(plan, model, history, extras={"metric_evaluations": p.evaluations})

    @staticmethod
    def _l1prop(p: cs.Problem, scores: dict, graph) -> np.ndarray:
        """Coefficients proportional to 1 / (mean channel norm per weight): small-norm groups lose most."""
        means = np.array([float(np.mean(scores[g])) for g in p.names])
        per_weight = means / np.maximum([graph.groups[g].params_per_channel for g in p.names], 1)
        inv = 1.0 / np.maximum(per_weight, 1e-12)
        return cs.proportional(p, inv / inv.max())


# ------------------------------------------------------------------ grid over a process pool
def _masked_metric(work: nn.Module, dense: dict, masks: ChannelMasks, z: torch.Tensor, x_cal, fn, x, y) -> float:
    """The metric of the dense weights with mask ``z`` folded in (BN re-estimated on ``x_cal`` when given)."""
    work.load_state_dict(dense)
    masks.fold_(work, z)
    recalibrate(work, x_cal)
    with torch.no_grad():
        return fn(work, x, y)


_WORKER: dict = {}


def _pool_payload(o: SoftCoefOptions, ctx: FitContext, model, masks, x, y, x_cal) -> bytes | None:
    """What every worker receives once (model, mask map, validation slice, metric spec), pickled; None when the
    metric cannot be pickled (a callable defined inside a function, a lambda)."""
    spec = SimpleNamespace(metric=getattr(ctx, "metric", None), task=ctx.task)
    try:
        return pickle.dumps((model, masks, x, y, x_cal, o, spec))
    except Exception:  # noqa: BLE001 - whatever pickle raises, the grid then runs in this process
        return None


def _init_worker(payload: bytes) -> None:
    torch.set_num_threads(1)
    model, masks, x, y, x_cal, o, spec = pickle.loads(payload)
    fn, _ = model_metric_fn(o, spec)
    dense = {k: v.detach().clone() for k, v in model.state_dict().items()}
    _WORKER.update(work=copy.deepcopy(model).eval(), dense=dense, masks=masks, x=x, y=y, x_cal=x_cal, fn=fn)


def _worker_metric(z: torch.Tensor) -> float:
    w = _WORKER
    return _masked_metric(w["work"], w["dense"], w["masks"], z, w["x_cal"], w["fn"], w["x"], w["y"])


class _GridPool:
    """A spawned :class:`ProcessPoolExecutor` whose workers hold the evaluation state (None payload: no pool)."""

    def __init__(self, payload: bytes | None, workers: int):
        self.payload, self.workers, self.pool = payload, int(workers), None

    def __enter__(self) -> "_GridPool":
        if self.payload is not None:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                            initargs=(self.payload,))
        return self

    def map(self, zs: list) -> list[float]:
        chunk = max(1, len(zs) // (4 * self.workers))
        return [float(v) for v in self.pool.map(_worker_metric, zs, chunksize=chunk)]

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
