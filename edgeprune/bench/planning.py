"""From a device budget to a pruning target: how much of the dense model's MACs to keep.

Before any training, :func:`derive` costs the dense architecture on the target with the cost model
(:func:`edgeprune.bench.costmodel.predict`, for the artifact the target prefers) and asks, for each
budget line, how far the model must shrink to meet it. Pruning a fraction ``1 - k`` of the MACs with
uniform-ish widths scales, per operator of the dense graph (the same roofline the cost model uses)::

    compute time     x k          (MACs; an op that falls under the cost model's THREAD_MIN_FLOPS runs
                                   on one thread from then on, so it is slowed by the thread speed-up)
    memory time      x sqrt(k)    (activations shrink with one width, weights with two: sqrt(k) is the
                                   conservative of the two)
    per-op / per-run overhead     unchanged (pruning channels removes no operator)
    latency(k)  = sum_op max(compute_op * k, memory_op * sqrt(k)) + overhead
    memory(k)   = base + k_w * weights * k + k_a * activation_peak * sqrt(k)   (the cost model's memory fit)
    size(k)     = weights * k

Memory and size grow with ``k``; latency mostly does, except where an op drops under the threading threshold.
:func:`keep_for` takes the largest ``k`` on a 0.005 grid whose prediction meets the budget, so a tighter
budget never keeps more MACs (the set of ``k`` that meet a budget only grows with the budget). Latency and memory aim at ``AIM`` of the budget (width
rounding to the target's multiple and the method's own budget fit land a few percent off the request;
``build --search`` then checks the built artifact and tightens). A user-given ``flops_keep`` (flag,
config or profile) is used as it is.

Out of reach (:class:`~edgeprune.errors.OutOfReachError`): when even ``KEEP_MIN`` of the MACs cannot
meet a line, typically because the runtime's fixed per-op overhead alone exceeds the latency budget.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..errors import OutOfReachError

#: the derivation aims at this fraction of a latency / memory / size budget (margin for width rounding)
AIM = 0.9
#: the least fraction of the dense MACs a derived target may keep; below it a budget is out of reach
KEEP_MIN = 0.05
#: p90 budgets are turned into a p50 aim with this tail ratio (an assumption; measured tails replace it)
P90_OVER_P50 = 1.25
OBJECTIVES = ("least-pruning", "fastest")
DERIVE_FILE = "target.json"
MODEL_VERSION = 2  # of the scaling model below: a new version re-derives cached targets


@dataclass
class Derivation:
    """The pruning target and how it was reached (written to the run folder as target.json)."""

    flops_keep: float
    source: str                      # given | profile | derived | dense-meets | limit | underived
    objective: str = "least-pruning"
    artifact: Optional[str] = None
    binding: Optional[str] = None    # the budget line that sets the target
    keeps: dict = field(default_factory=dict)        # line -> largest keep meeting it
    dense: dict = field(default_factory=dict)        # dense predictions (latency_ms, overhead_ms, memory, size)
    predicted: dict = field(default_factory=dict)    # predictions at flops_keep
    budget: dict = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def sentence(self, target_name: str) -> str:
        """The one line the build prints ("rpi4: p50 10 ms -> keep ~42% of MACs, predicted 8.7 ms for tflite-int8")."""
        if self.source in ("given", "profile"):
            return f"{target_name}: keep {self.flops_keep:.0%} of MACs ({self.note})"
        if self.source in ("limit", "underived"):
            return f"{target_name}: {self.note}"
        lat = self.predicted.get("latency_ms")
        b = self.budget.get(self.binding) if self.binding else None
        if self.source == "dense-meets":
            return f"{target_name}: {self.note}"
        line = _LINE_WORDS.get(self.binding, self.binding)
        unit = "ms" if "latency" in (self.binding or "") else "MB"
        what = f"predicted {_g(lat)} ms" if lat is not None else ""
        if self.binding and "latency" not in self.binding:
            what = f"predicted {_g(self.predicted.get(self.binding))} {unit}"
        return (f"{target_name}: {line} {_g(b)} {unit} -> keep ~{self.flops_keep:.0%} of MACs, {what} for "
                f"{self.artifact} (cost model, before training)")


_LINE_WORDS = {"latency_p50_ms": "p50", "latency_p90_ms": "p90", "peak_memory_mb": "model memory",
               "model_size_mb": "file size"}


def _g(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


# ----------------------------------------------------------------------------------- the scaling model


@dataclass
class DenseCost:
    """The dense graph's cost on the target: per-op compute/memory microseconds and the fixed overhead."""

    compute_us: list
    memory_us: list
    overhead_ms: float
    mem_base_mb: float
    mem_weight_mb: float      # k_w x weights (MiB)
    mem_act_mb: float         # k_a x activation peak (MiB)
    size_mb: float            # weights of the artifact's precision (MiB): the file-size estimate
    flops: list = field(default_factory=list)   # per op; with thread_speedup: ops that fall to one thread
    thread_speedup: float = 1.0                 # all-threads over one-thread compute rate on the target

    def latency_ms(self, k: float) -> float:
        from .costmodel import THREAD_MIN_FLOPS

        r, total = math.sqrt(k), 0.0
        flops = self.flops or [0.0] * len(self.compute_us)
        for c, m, f in zip(self.compute_us, self.memory_us, flops):
            slow = self.thread_speedup if f >= THREAD_MIN_FLOPS > f * k else 1.0
            total += max(c * k * slow, m * r)
        return total / 1e3 + self.overhead_ms

    def memory_mb(self, k: float) -> float:
        return self.mem_base_mb + self.mem_weight_mb * k + self.mem_act_mb * math.sqrt(k)

    def model_size_mb(self, k: float) -> float:
        return self.size_mb * k


def dense_cost(prediction: dict, factors: dict, thread_speedup: float = 1.0) -> DenseCost:
    """A :class:`DenseCost` from ``costmodel.predict(..., detail=True)``, the memory factors it used and the
    target's all-threads / one-thread compute ratio (:func:`thread_speedup`)."""
    ops = prediction["ops"]
    w, a = prediction["weight_mb"], prediction["activation_peak_mb"]
    if factors.get("mem_base_mb") is None:  # the cost model's tensor lower bound
        base, kw, ka = 0.0, 1.0, 1.0
    else:
        base, kw, ka = factors["mem_base_mb"], factors["mem_weight_factor"], factors["mem_act_factor"]
    return DenseCost([o["compute_us"] for o in ops], [o["memory_us"] for o in ops], prediction["overhead_ms"],
                     float(base), float(kw) * w, float(ka) * a, w, [o["flops"] for o in ops], float(thread_speedup))


def thread_speedup(target, dtype: str) -> float:
    """How much faster the cost model runs a large op than a small one (one thread) on ``target``."""
    from .costmodel import HOST_THREAD_EFFICIENCY, sustained

    if target.name == "host":
        return 1.0 + HOST_THREAD_EFFICIENCY * (min(target.threads, int(target.fact("cores", 1))) - 1)
    big, small, _, _ = sustained(target, dtype)
    return big / small if small > 0 else 1.0


def keep_for(fn: Callable[[float], float], limit: float, lo: float = KEEP_MIN) -> Optional[float]:
    """The largest ``k`` on the grid {1, 0.995, ..., lo} with ``fn(k) <= limit`` (1.0 when the dense model
    meets it; None when no grid point does). A scan, not a bisection: ``fn`` need not be monotone, and the
    answer is monotone in ``limit`` all the same."""
    steps = int(round((1.0 - lo) * 200))
    for i in range(steps + 1):
        k = max(lo, round(1.0 - i / 200, 3))
        if fn(k) <= limit:
            return k
    return None


def line_functions(dc: DenseCost, budget: dict) -> dict:
    """budget line -> (the quantity as a function of k, the aimed value): the lines a derivation can use."""
    out = {}
    if budget.get("latency_p50_ms"):
        out["latency_p50_ms"] = (dc.latency_ms, budget["latency_p50_ms"] * AIM)
    if budget.get("latency_p90_ms"):
        out["latency_p90_ms"] = (lambda k: dc.latency_ms(k) * P90_OVER_P50, budget["latency_p90_ms"] * AIM)
    if budget.get("peak_memory_mb"):
        out["peak_memory_mb"] = (dc.memory_mb, budget["peak_memory_mb"] * AIM)
    if budget.get("model_size_mb"):
        out["model_size_mb"] = (dc.model_size_mb, budget["model_size_mb"] * AIM)
    return out


def solve(dc: DenseCost, budget: dict, artifact: str, objective: str = "least-pruning") -> Derivation:
    """The pruning target for ``budget`` (a dict of budget lines) from the dense cost; raises
    :class:`OutOfReachError` when a line cannot be met at ``KEEP_MIN`` of the MACs."""
    fns = line_functions(dc, budget)
    dense = {"latency_ms": dc.latency_ms(1.0), "overhead_ms": dc.overhead_ms,
             "peak_memory_mb": dc.memory_mb(1.0), "model_size_mb": dc.model_size_mb(1.0)}
    keeps = {}
    for line, (fn, aim) in fns.items():
        k = keep_for(fn, aim)
        if k is None:
            raise OutOfReachError(out_of_reach_reason(line, budget[line], fn, dc, artifact))
        keeps[line] = k
    keep = min(keeps.values(), default=1.0)
    binding = min(keeps, key=keeps.get) if keeps else None
    pred = {"latency_ms": dc.latency_ms(keep), "peak_memory_mb": dc.memory_mb(keep),
            "model_size_mb": dc.model_size_mb(keep)}
    pred["latency_p50_ms"], pred["latency_p90_ms"] = pred["latency_ms"], pred["latency_ms"] * P90_OVER_P50
    d = Derivation(keep, "derived", objective, artifact, binding, keeps, dense, pred, dict(budget))
    if keep >= 1.0:
        d.source = "dense-meets"
        d.note = dense_meets_note(dc, budget, artifact)
    return d


def dense_meets_note(dc: DenseCost, budget: dict, artifact: str) -> str:
    parts = []
    for line, (fn, _aim) in line_functions(dc, budget).items():
        v, b = fn(1.0), budget[line]
        room = f"{b / v:.0f}x under" if v > 0 and v < b / 10 else f"{(b - v) / b:.0%} headroom"
        parts.append(f"{_LINE_WORDS.get(line, line)} {_g(v)} of {_g(b)} ({room})")
    return (f"the dense model already meets the budget for {artifact} (predicted: {', '.join(parts) or 'no lines'}); "
            "nothing to prune for it")


def out_of_reach_reason(line: str, bud: float, fn, dc: DenseCost, artifact: str) -> str:
    word = _LINE_WORDS.get(line, line)
    if "latency" in line and dc.overhead_ms >= bud * (1 / P90_OVER_P50 if line == "latency_p90_ms" else 1):
        return (f"{word} budget {_g(bud)} ms is out of reach on this target: the runtime's fixed per-operator "
                f"overhead alone is {_g(dc.overhead_ms)} ms for {artifact} (cost model), and pruning channels "
                "removes no operator; use a model with fewer layers, a faster runtime or target, or a looser budget")
    return (f"{word} budget {_g(bud)} is out of reach: even keeping {KEEP_MIN:.0%} of the MACs the cost model "
            f"predicts {_g(fn(KEEP_MIN))} for {artifact}; use a smaller model, a faster target or a looser budget")


# ----------------------------------------------------------------------------------- the build's target


def preferred_artifact(target, run_path: Optional[Path] = None, formats: Optional[list] = None) -> str:
    """The artifact the build will judge: the target's order (only ``formats`` when given), with the export's
    measured ``runtime_choice`` applied when a previous export in the run folder recorded one (fp32 ahead of
    a slower INT8)."""
    from ..export.speedcheck import artifact_order

    choice = None
    exp = Path(run_path) / "export.json" if run_path else None
    if exp is not None and exp.is_file():
        try:
            choice = json.loads(exp.read_text()).get("runtime_choice")
        except (OSError, ValueError):
            choice = None
    order = [a for a in target.artifacts if not formats or a in formats] or list(formats or target.artifacts)
    return artifact_order(order, choice)[0]


def predict_dense(model, example, target, artifact: str) -> tuple[dict, dict, float]:
    """Cost-model prediction (with per-op detail) of the dense model for ``artifact`` on ``target``, the
    calibration factors it used and the target's thread speed-up. The graph is exported with torch's TorchScript ONNX exporter into a
    temporary folder (fast; only the graph's shapes matter here, not its weights)."""
    import warnings

    import torch

    from .costmodel import factors_for, load_calibration, predict, runtime_of

    dtype = "int8" if artifact.endswith("int8") else "fp32"
    with tempfile.TemporaryDirectory(prefix="edgeprune-derive-") as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(d) / "dense.onnx"
        try:
            with torch.no_grad():
                torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, opset_version=17)
        except Exception:  # noqa: BLE001 - a model only the dynamo exporter takes: the pipeline's own export
            from ..export.onnx_export import export_onnx_fp32

            export_onnx_fp32(model.eval(), example, path, opset=target.onnx_opset)
        pred = predict(str(path), target, dtype=dtype, runtime=runtime_of(artifact), detail=True)
    factors, _ = factors_for(load_calibration(), runtime_of(artifact), dtype)
    return pred, factors, thread_speedup(target, dtype)


def objective_of(b) -> str:
    """--objective / search.objective, else the profile's budget.objective, else least-pruning."""
    return (b.cfg.get("search") or {}).get("objective") or getattr(b.target.budget, "objective", None) or "least-pruning"


def budget_lines(b) -> dict:
    """The effective budget lines (profile, overridden by the config's [budget])."""
    bud = b.target.budget
    over = {k: v for k, v in (b.cfg.get("budget") or {}).items() if v is not None}
    keys = ("latency_p50_ms", "latency_p90_ms", "peak_memory_mb", "model_size_mb", "max_accuracy_drop")
    return {k: over.get(k, getattr(bud, k, None)) for k in keys}


def pruning_target(b, strict: bool = False) -> Derivation:
    """The build's pruning target: a user-given flops_keep (flag/config, then the profile's), else derived
    from the budget through the cost model (cached in the run folder's target.json for the same inputs).

    An out-of-reach budget raises (``strict``, when the build is about to prune); a stage command after prune
    (``edgeprune budget RUN`` with a changed budget) falls back to the target the prune stage recorded."""
    try:
        return _pruning_target(b)
    except OutOfReachError:
        rec = b.run.path / "prune.json"
        if strict or not rec.is_file():
            raise
        keep = json.loads(rec.read_text()).get("flops_keep_requested")
        return Derivation(keep, "given", objective_of(b), note="the target the prune stage recorded")


def _pruning_target(b) -> Derivation:
    given = b.cfg["method"]["flops_keep"]
    obj = objective_of(b)
    if given:
        return Derivation(given, "given", obj, note="given by --flops-keep / method.flops_keep")
    if b.target.budget.flops_keep:
        return Derivation(b.target.budget.flops_keep, "profile", obj,
                          note=f"the profile's budget.flops_keep ({b.target.source_path})")
    d = _cached_or_derived(b, obj)
    if obj == "fastest":
        d = _fastest(b, d)
    return d


def _key(b, obj: str, artifact: str) -> str:
    """What the derivation depends on: architecture, target profile, budget, artifact, calibration."""
    import hashlib

    from .costmodel import load_calibration

    parts = [b.arch, dict(b.target.to_dict(), source_path=None), budget_lines(b), artifact,
             load_calibration().get("factors", {}), AIM, KEEP_MIN, P90_OVER_P50, MODEL_VERSION]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cached_or_derived(b, obj: str) -> Derivation:
    from ..models import build_arch, example_for

    artifact = preferred_artifact(b.target, b.run.path, b.cfg["export"]["formats"])
    key = _key(b, obj, artifact)
    path = b.run.path / DERIVE_FILE
    if path.is_file():
        try:
            rec = json.loads(path.read_text())
            if rec.get("key") == key:
                rec.pop("key")
                return Derivation(**{**rec, "objective": obj})
        except (OSError, ValueError, TypeError):
            pass
    model = build_arch(b.own_arch(b.arch))
    try:
        pred, factors, speedup = predict_dense(model, example_for(b.arch), b.target, artifact)
    except Exception as e:  # noqa: BLE001 - a model the cost model cannot read is still built, unpruned
        msg = (str(e).splitlines() or [type(e).__name__])[0][:200]
        b.ui.warn(f"the cost model could not read the dense model ({msg}): no pruning target derived from the "
                  "budget; give one with --flops-keep")
        return Derivation(1.0, "underived", obj, artifact, note=f"not derived: {msg}")
    d = solve(dense_cost(pred, factors, speedup), budget_lines(b), artifact, obj)
    if path.parent.is_dir():
        from ..runfolder import write_json

        write_json(path, {**d.to_dict(), "key": key})
    return d


def _fastest(b, d: Derivation) -> Derivation:
    """--objective fastest in one round: the most pruning the accuracy budget may allow is estimated by the
    pruning-limit guard's s* of the trained dense model (limit.json), never less pruning than the budget needs."""
    lim = b.run.path / "limit.json"
    s = None
    if lim.is_file():
        try:
            s = json.loads(lim.read_text()).get("s_star")
        except (OSError, ValueError):
            s = None
    if s is None:
        guard = (b.cfg.get("limit") or {}).get("guard", "auto")
        later = guard != "off" and b.task == "classification" and not lim.is_file()
        d.note = (d.note or "") + ("; objective fastest: after training, the target follows the trained model's "
                                   "predicted pruning limit" if later else
                                   "; objective fastest: no pruning-limit estimate, so the budget's target stands "
                                   "(build --search measures how far accuracy allows)")
        return d
    k = max(KEEP_MIN, round(1.0 - float(s), 3))
    if k < d.flops_keep:
        d = Derivation(**{**d.to_dict(), "flops_keep": k, "source": "limit",
                          "note": f"objective fastest: keep ~{k:.0%} of MACs, the predicted pruning limit s* = {s:.2f} "
                                  f"of the dense model (the budget alone needs {d.flops_keep:.0%})"})
    return d


def announce(b) -> Derivation:
    """Compute (or reuse) the pruning target and say it in one line (an out-of-reach budget raises here)."""
    d = b.__dict__["pruning_target"] = pruning_target(b, strict=True)
    b.ui.log(d.sentence(b.target.name))
    return d


def refine_after_guard(b, fps: dict, run_guard) -> None:
    """Before prune: run the pruning-limit guard; with objective fastest its s* may set the target, so the
    guard is first run silently (to estimate s*), the target recomputed, then reported as usual."""
    if objective_of(b) == "fastest" and b.pruning_target.source not in ("given", "profile"):
        from ..ui import UI

        ui, b.ui = b.ui, UI(quiet=True)
        try:
            run_guard(b, fps["train"])
        finally:
            b.ui = ui
        b.__dict__.pop("pruning_target", None)
        announce(b)
    run_guard(b, fps["train"])


def layer_latency_weights(model, example, target, layer_names, artifact: Optional[str] = None) -> tuple[dict, dict]:
    """Per-layer latency weights for a cost-aware budget term: for each of ``layer_names`` (the conv / linear
    layers of the ModelGraph), the target's predicted marginal microseconds per MAC of its ONNX op, divided by
    the MACs-weighted mean over the mapped layers (so the weighted dense cost equals the dense MACs).

    The marginal time follows :meth:`DenseCost.latency_ms` at k = 1: a compute-bound op (compute >= memory)
    saves its compute time per removed MAC, a memory-bound one half its memory time (memory falls ~ sqrt(k)),
    the per-op overhead nothing. An op maps to a layer by its node name, ``/<scopes>/<module name>/<OpType>``
    (TorchScript exporter; each scope is the module's name relative to an enclosing scope, see
    :func:`_module_of_node`). Unmapped layers get 1.0 (plain MACs) and are listed in ``info["unmapped"]``."""
    artifact = artifact or preferred_artifact(target)
    pred, _, _ = predict_dense(model, example, target, artifact)
    per_layer: dict = {}
    for o in pred["ops"]:
        parts = str(o["name"]).strip("/").split("/")
        if len(parts) < 2 or not o.get("macs"):
            continue
        c, m = float(o["compute_us"]), float(o["memory_us"])
        marginal = c if c >= m else 0.5 * m
        acc = per_layer.setdefault(_module_of_node(parts[:-1]), [0.0, 0.0])
        acc[0] += marginal
        acc[1] += float(o["macs"])
    mapped = {n: per_layer[n] for n in layer_names if n in per_layer and per_layer[n][1] > 0}
    total_us = sum(v[0] for v in mapped.values())
    total_macs = sum(v[1] for v in mapped.values())
    mean = total_us / total_macs if total_macs and total_us else 0.0
    weights = {n: (mapped[n][0] / mapped[n][1] / mean if n in mapped and mean else 1.0) for n in layer_names}
    info = {"target": target.name, "artifact": artifact, "source": "predicted (cost model, dense graph)",
            "us_per_mac_mean": mean, "unmapped": [n for n in layer_names if n not in mapped or not mean]}
    return weights, info


def _module_of_node(scopes: list) -> str:
    """The torch module name behind an ONNX node's scopes: ``["1", "branch", "branch.0", "branch.0.0"]`` ->
    ``"1.branch.0.0"`` (a scope that extends the previous one by ``.x`` replaces it; otherwise it nests)."""
    full, prev = "", ""
    for c in scopes:
        if prev and c.startswith(prev + "."):
            full = full[: len(full) - len(prev)] + c
        else:
            full = f"{full}.{c}" if full else c
        prev = c
    return full
