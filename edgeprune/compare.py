"""One benchmark harness for every pruning method, with Torch-Pruning's own pruners side by side.

For a dataset, a built-in model, FLOPs-removal levels, methods and seeds, :func:`run_compare` runs each
(method, level, seed) from the same starting point and records what the compact model really costs::

    for seed:      train the dense model once (cached, shared by every method and level of that seed)
      for method, level:
        prune      edgeprune methods: ``get_method(name).fit`` with ``flops_keep = 1 - level``, then
                   ``compact_and_verify`` (edgeprune's surgery); Torch-Pruning peers: ``tp.pruner``
                   on a copy, pruning ratio bisected until TP's own op counter keeps <= 1 - level
        count      params and MACs counted on the COMPACT model (edgeprune's graph cost of the compact
                   model, cross-checked against ``tp.utils.count_ops_and_params``)
        fine-tune  the same total epoch budget for everyone (``--epoch-budget``: a method's own training
                   before pruning counts against it), same lr, batch and seed-fixed batch order
        evaluate   test metric: accuracy (%) or PSNR (dB) for reconstruction models
        export     ONNX (dynamo exporter), parity-checked against torch
    latency        at the end, every ONNX file in interleaved rounds of fresh single-thread
                   onnxruntime processes (``edgeprune.bench.host.measure_host``), median p50 over rounds

Outputs in the results folder: ``results.csv`` / ``results.json`` (one row per method/level/seed, dense
rows included), ``table.md`` (mean ± std over seeds), ``metric_vs_macs.png`` and ``README.md`` (command,
date, machine, versions, protocol, tables, computed observations, and ``notes.md`` if present).
Intermediate files (dense checkpoints, ONNX files, finished rows for ``--resume``) go to
``<out>/cache/``, which ignores itself in git.

Method names: every method in the registry (``edgeprune methods``) plus the Torch-Pruning peers in
:data:`TP_PEERS`. ``NAME@N`` rounds kept widths to multiples of N for that method (edgeprune's
``width_multiple`` / TP's ``round_to``); ``NAME[key=value,...]`` passes options to a registry method
(``pl-gates[gamma=0]`` is the ablation without the condition-number term).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import datetime as _dt
import hashlib
import io
import json
import logging
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
import tomllib
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .runfolder import atomic_write_bytes, atomic_write_text, json_default
from .errors import ConfigError, EdgepruneError

# --------------------------------------------------------------------------------------------- peers

TP_PEERS: dict[str, str] = {
    "tp-l1": "Torch-Pruning MetaPruner + MagnitudeImportance(p=1), local (per-group) ranking",
    "tp-l2": "Torch-Pruning MetaPruner + MagnitudeImportance(p=2), local (per-group) ranking",
    "tp-taylor": "Torch-Pruning MetaPruner + TaylorImportance (gradients of one training batch), local ranking",
    "tp-groupnorm": "Torch-Pruning GroupNormPruner (DepGraph): group-norm importance after a group-sparsity "
                    "training phase, local ranking",
    "tp-random": "Torch-Pruning MetaPruner + RandomImportance, local ranking",
}

LEVELS_DEFAULT = (0.5, 0.75, 0.9)
DENSE_FT = "dense+ft"  # reference row: the dense model fine-tuned with the same budget as every pruned one
RESULT_FILES = ("results.csv", "results.json", "table.md", "metric_vs_macs.png", "README.md")
CSV_FIELDS = [
    "method", "base_method", "kind", "level", "requested_keep", "seed", "width_multiple", "task", "metric_name",
    "metric", "metric_before_ft", "dense_metric", "macs", "params", "dense_macs", "dense_params", "macs_kept",
    "params_kept", "tp_ops", "tp_ops_kept", "macs_check", "latency_ms", "latency_spread_pct", "speedup",
    "prune_s", "train_s", "own_epochs", "finetune_epochs", "onnx_max_abs_diff", "arch", "widths", "error",
]


def available_methods() -> list[str]:
    """Every method a comparison can run: the registry's (picked up at call time) + the TP peers."""
    from .methods import list_methods

    return list_methods() + list(TP_PEERS)


@dataclass(frozen=True)
class MethodSpec:
    label: str  # as given: "l1", "tp-l2@8", "pl-gates[gamma=0]"
    name: str  # registry / peer name
    width_multiple: int | None  # None: the run's default
    options: tuple = ()  # ((key, value), ...) from NAME[key=value,...]: the method's own options

    @property
    def kind(self) -> str:
        return "torch-pruning" if self.name in TP_PEERS else "edgeprune"


_SPEC = re.compile(r"^(?P<name>[^\[\]@]+)(?:\[(?P<opts>[^\]]*)\])?(?:@(?P<mult>.*))?$")


def _option_value(text: str):
    """``0`` -> 0, ``0.5`` -> 0.5, ``true`` -> True, ``"x"``/``x`` -> "x" (TOML literals, else a string)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_method(spec: str) -> MethodSpec:
    """``NAME``, ``NAME@N`` (width multiple) or ``NAME[key=value,...]`` (method options), e.g. ``pl-gates[gamma=0]@8``."""
    spec = spec.strip()
    m = _SPEC.match(spec)
    name = m.group("name").strip() if m else spec
    known = available_methods()
    if spec.count("[") != spec.count("]"):
        raise ConfigError(f"method {spec!r}: unbalanced brackets; write options as NAME[key=value,...], "
                          "e.g. pl-gates[gamma=0]")
    if not m or name not in known:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(known)} (or 'all', 'edgeprune', 'tp')")
    wm = None
    mult = m.group("mult")
    if mult is not None:
        if not mult.isdigit() or int(mult) < 1:
            raise ConfigError(f"method {spec!r}: the part after '@' must be a width multiple >= 1, e.g. l1@8")
        wm = int(mult)
    options: dict = {}
    for item in filter(None, (s.strip() for s in (m.group("opts") or "").split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"method {spec!r}: options are written key=value, e.g. pl-gates[gamma=0]")
        options[key.strip()] = _option_value(value.strip())
    if options:
        if name in TP_PEERS:
            raise ConfigError(f"method {spec!r}: Torch-Pruning peers take no options here; their settings are "
                              "--taylor-samples and --groupnorm-reg")
        from .methods import get_method

        get_method(name, options)  # unknown options or bad values fail now, before any training
    return MethodSpec(spec, name, wm, tuple(sorted(options.items())))


def split_methods(text: str) -> list[str]:
    """A comma list of method specs; commas inside ``[...]`` belong to the spec's options."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [s.strip() for s in out if s.strip()]


def expand_methods(text: str | list[str] | None) -> list[MethodSpec]:
    """``"all"`` (default), ``"edgeprune"``, ``"tp"`` or a comma list of specs (``NAME@N``, ``NAME[k=v,...]``)."""
    from .methods import list_methods

    items = text if isinstance(text, list) else split_methods(text or "all")
    out: list[str] = []
    for it in items:
        it = it.strip()
        if it == "all":
            out += available_methods()
        elif it == "edgeprune":
            out += list_methods()
        elif it == "tp":
            out += list(TP_PEERS)
        else:
            out.append(it)
    specs = [parse_method(s) for s in dict.fromkeys(out)]
    if not specs:
        raise ConfigError("no method to compare")
    return specs


# --------------------------------------------------------------------------------------------- config

@dataclass
class CompareConfig:
    dataset: str = "fashion-mnist"
    model: str = "resnet"
    model_options: dict = field(default_factory=dict)
    levels: list[float] = field(default_factory=lambda: list(LEVELS_DEFAULT))
    methods: list[str] = field(default_factory=lambda: ["all"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: int = 3  # dense training
    method_epochs: int | None = None  # training inside methods that train before pruning (None: = epochs)
    finetune_epochs: int = 1
    # "equal-total": every method gets method_epochs + finetune_epochs epochs after the dense phase, whatever
    # it spends them on (a method's own training counts; one that trains none fine-tunes them all);
    # "equal-finetune": every method fine-tunes finetune_epochs, methods that train get method_epochs on top
    epoch_budget: str = "equal-total"
    target_metric: float | None = None  # time to reach this validation metric is reported (None: not)
    val_samples: int = 2000  # validation samples for the per-epoch curves
    train_limit: int = 0  # 0 = the whole training split
    data_seed: int = 0  # the data split/subset is the same for every seed
    data_dir: str = ""
    batch_size: int = 64
    lr: float = 0.01
    finetune_lr: float = 0.005  # the pipeline's fine-tune stage also halves the lr
    weight_decay: float = 5e-4
    width_multiple: int = 1
    method_options: dict = field(default_factory=dict)  # {method: {option: value}} for registry methods
    threads: int = 1  # torch threads for training (1 is much faster on a shared 2-core host)
    taylor_samples: int = 256
    groupnorm_reg: float = 5e-4
    latency: bool = True
    latency_runs: int = 50
    latency_warmup: int = 10
    latency_rounds: int = 3
    out: str = "benchmarks/results/compare"
    resume: bool = False

    def fingerprint(self, *keys: str) -> str:
        d = asdict(self)
        blob = json.dumps({k: d[k] for k in keys} if keys else d, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    DENSE_KEYS = ("dataset", "model", "model_options", "epochs", "train_limit", "data_seed", "data_dir",
                  "batch_size", "lr", "weight_decay")
    ROW_KEYS = DENSE_KEYS + ("finetune_epochs", "finetune_lr", "width_multiple", "method_options",
                             "method_epochs", "taylor_samples", "groupnorm_reg", "epoch_budget", "val_samples")

    @property
    def method_train_epochs(self) -> int:
        return self.epochs if self.method_epochs is None else self.method_epochs

    @property
    def post_dense_epochs(self) -> int:
        """Epochs each method gets after the shared dense phase under ``equal-total``."""
        return self.method_train_epochs + self.finetune_epochs


EPOCH_BUDGETS = ("equal-total", "equal-finetune")


def method_train_options(cfg: CompareConfig, seed: int = 0) -> dict:
    """The run's training options as a registry method sees them (``FitContext.train_options``)."""
    return {"epochs": cfg.method_train_epochs, "finetune_epochs": cfg.finetune_epochs, "batch_size": cfg.batch_size,
            "lr": cfg.lr, "weight_decay": cfg.weight_decay, "seed": seed}


def method_options(spec: "MethodSpec", cfg: CompareConfig) -> dict:
    """A registry method's options: ``--method-options`` for its name, overridden by the spec's ``[k=v]``."""
    return {**cfg.method_options.get(spec.name, {}), **dict(spec.options)}


def epoch_plan(spec: "MethodSpec", cfg: CompareConfig) -> dict:
    """How many epochs a method trains on its own (before pruning) and fine-tunes (after), and whether it
    starts from scratch (then the dense phase's epochs are part of its budget too)."""
    scratch, own = False, 0
    if spec.kind == "torch-pruning":
        own = cfg.method_train_epochs if spec.name == "tp-groupnorm" else 0
    else:
        from .methods import get_method

        m = get_method(spec.name, method_options(spec, cfg))
        own = m.own_epochs(method_train_options(cfg))
        scratch = bool(getattr(m, "trains_from_scratch", False))
    if cfg.epoch_budget == "equal-finetune":
        ft = cfg.finetune_epochs
    else:
        ft = max(0, cfg.post_dense_epochs + (cfg.epochs if scratch else 0) - own)
    return {"own_epochs": own, "finetune_epochs": ft, "from_scratch": scratch}


# --------------------------------------------------------------------------------------------- data / training

@dataclass
class Data:
    name: str
    task: str
    arrays: dict
    describe: dict
    input_shape: tuple
    num_outputs: int
    metric_name: str
    chance: float | None


def load_data(cfg: CompareConfig) -> Data:
    from .data import load_dataset
    from .models import model_task
    from .train import TASK_METRIC

    ds = load_dataset(cfg.dataset, seed=cfg.data_seed, data_dir=cfg.data_dir or None, limit=cfg.train_limit or None)
    task = model_task(cfg.model)
    if task == "reconstruction":
        # the built-in autoencoder ends in a sigmoid: it reconstructs pixels in [0, 1], so it sees and
        # predicts raw pixels (normalising would put the target outside what the model can output)
        norm = lambda x: np.ascontiguousarray(x, dtype=np.float32)  # noqa: E731
    else:
        norm = ds.normalize
    arrays = {
        "x_train": norm(ds.x_train), "y_train": ds.y_train, "x_val": norm(ds.x_val), "y_val": ds.y_val,
        "x_test": norm(ds.x_test), "y_test": ds.y_test,
    }
    desc = ds.describe()
    desc["normalized_inputs"] = task != "reconstruction"
    chance = 100.0 / ds.num_classes if task == "classification" else None
    return Data(ds.name, task, arrays, desc, ds.input_shape, ds.num_classes, TASK_METRIC[task], chance)


def _fit(model, x, y, *, task: str, epochs: int, lr: float, cfg: CompareConfig, seed: int, optimizer=None,
         val=None) -> tuple[float, list[dict]]:
    """edgeprune's ``train`` in channels-last layout (several times faster here).

    Returns (training seconds, per-epoch records); with ``val`` the records carry ``val_metric``, and the
    seconds exclude the time spent evaluating it."""
    import torch

    from .train import train

    t0 = time.perf_counter()
    epochs_log: list[dict] = []
    if epochs > 0:
        model.to(memory_format=torch.channels_last)
        try:
            epochs_log = train(model, x, y, task=task, epochs=epochs, batch_size=cfg.batch_size, lr=lr,
                               weight_decay=cfg.weight_decay, seed=seed, optimizer=optimizer, val=val).epochs
        finally:
            model.to(memory_format=torch.contiguous_format)
    model.eval()
    wall = time.perf_counter() - t0
    return (sum(e["seconds"] for e in epochs_log) if val is not None else wall), epochs_log


def time_to_target(curve: list | None, target: float | None, index: int = 0) -> float | None:
    """The first time at which a ``[[seconds, val_metric, epochs], ...]`` curve reaches ``target``:
    in seconds (``index=0``) or in epochs trained (``index=2``)."""
    if not curve or target is None:
        return None
    return next((float(p[index]) for p in curve if p[1] is not None and p[1] >= target), None)


def _example(data: Data):
    import torch

    return torch.zeros(1, *data.input_shape)


def _build(cfg: CompareConfig, data: Data):
    from .models import build_model

    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.model_options.items()}
    return build_model(cfg.model, data.input_shape, data.num_outputs, **opts)


# --------------------------------------------------------------------------------------------- counting

def tp_counts(model, example) -> dict:
    """Torch-Pruning's own op counter (``tp.utils.count_ops_and_params``) on ``model``.

    ``ops``: TP's total, which also counts bias adds, BatchNorm/ReLU/pooling element ops and
    ConvTranspose at output positions. ``weight_macs``: TP's layer-wise conv/linear entries minus
    their bias term, ConvTranspose rescaled from output to input positions: the MACs every row is
    compared on (edgeprune's graph cost counts the same thing).
    """
    import torch_pruning as tp
    from torch import nn

    model.eval()
    with contextlib.redirect_stdout(io.StringIO()):
        ops, params, layer_flops, _ = tp.utils.count_ops_and_params(model, example, layer_wise=True)
    from .surgery.graph import record_shapes

    named = record_shapes(model, example, (nn.modules.conv._ConvNd, nn.Linear))
    modules = dict(model.named_modules())
    weight_macs = 0
    for name, (ishape, oshape) in named.items():  # layers not run in forward are absent
        m = modules[name]
        f = float(layer_flops.get(m) or 0)
        if getattr(m, "bias", None) is not None:
            f -= m.out_features if isinstance(m, nn.Linear) else int(np.prod(oshape[1:]))
        if isinstance(m, nn.modules.conv._ConvTransposeNd):
            f = f * int(np.prod(ishape[2:])) / int(np.prod(oshape[2:]))
        weight_macs += int(round(f))
    return {"ops": int(ops), "params": int(params), "weight_macs": weight_macs}


def count_compact(model, example) -> dict:
    """Params and MACs of a (compact) model, counted on the model itself, two independent ways.

    ``macs``: edgeprune's graph cost of this very model (``analyze(model).dense_cost()``: conv/linear
    weight MACs, ConvTranspose at input positions), cross-checked against :func:`tp_counts`:
    ``macs_check`` is "ok" when TP's weight MACs equal the graph's and TP's, the graph's and the
    tensors' parameter counts are equal. ``tp_ops`` is TP's total op count (its own definition).
    """
    from .surgery import analyze

    model.eval()
    cost = analyze(model, example).dense_cost()
    params = int(sum(p.numel() for p in model.parameters()))
    tpc = tp_counts(model, example)
    problems = []
    if tpc["weight_macs"] != cost["macs"]:
        problems.append(f"MACs: tp {tpc['weight_macs']} vs graph {cost['macs']}")
    if not (params == tpc["params"] == cost["params"]):
        problems.append(f"params: tensors {params}, tp {tpc['params']}, graph {cost['params']}")
    return {
        "params": params, "macs": int(cost["macs"]), "tp_ops": tpc["ops"], "tp_weight_macs": tpc["weight_macs"],
        "macs_check": "ok" if not problems else "; ".join(problems),
        "widths": _widths(model),
    }


def _widths(model) -> list[int]:
    """Output widths of the conv/linear layers in module order (the compact architecture)."""
    from torch import nn

    out = []
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            out.append(int(m.out_channels))
        elif isinstance(m, nn.Linear):
            out.append(int(m.out_features))
    return out


def widths_str(widths: list[int]) -> str:
    """``[11, 11, 11, 22]`` -> ``"11x3 22"`` (runs collapsed)."""
    parts, i = [], 0
    while i < len(widths):
        j = i
        while j + 1 < len(widths) and widths[j + 1] == widths[i]:
            j += 1
        n = j - i + 1
        parts.append(f"{widths[i]}x{n}" if n > 1 else str(widths[i]))
        i = j + 1
    return " ".join(parts)


# --------------------------------------------------------------------------------------------- pruning

def _ignored_modules(model, example) -> list:
    """The layers whose output width must stay (the model output), found by edgeprune's graph."""
    from .surgery import analyze

    g = analyze(model, example)
    mods = dict(model.named_modules())
    return [mods[n] for n in g.ignored]


def prune_edgeprune(spec: MethodSpec, dense, data: Data, cfg: CompareConfig, seed: int, keep: float,
                    log: Callable[[str], None]) -> tuple[object, dict]:
    """A registry method's plan, compacted and verified by edgeprune's surgery."""
    import torch

    from .methods import FitContext, get_method
    from .surgery import analyze, compact_and_verify
    from .train import seed_everything

    a = data.arrays
    example = _example(data)
    method = get_method(spec.name, method_options(spec, cfg))
    model = copy.deepcopy(dense).eval()
    graph = analyze(model, example)
    wm = spec.width_multiple or cfg.width_multiple
    ctx = FitContext(
        a["x_train"], a["y_train"], a["x_val"], a["y_val"], example, graph, data.task, keep, wm, seed,
        method_train_options(cfg, seed), progress=None, log=lambda s: log(f"    {s.strip()}"),
    )
    seed_everything(seed)
    t0 = time.perf_counter()
    result = method.fit(model, ctx)
    fit_s = time.perf_counter() - t0
    src = result.model.eval()
    g2 = graph if src is model else analyze(src, example)
    inputs = torch.from_numpy(a["x_val"][:64])
    small, report = compact_and_verify(src, result.plan, example, inputs, g2)
    prune_s = time.perf_counter() - t0
    info = {
        "prune_s": prune_s, "fit_s": fit_s, "predicted_macs": int(report["macs"]),
        "predicted_params": int(report["params"]), "verify_rel_diff": report.get("rel_diff"),
        "dropped_branches": list(result.plan.dropped), "width_multiple": wm,
        "trains_from_scratch": bool(getattr(method, "trains_from_scratch", False)),
    }
    return small.eval(), info


class _TPState:
    """Per-seed Torch-Pruning inputs reused across levels: Taylor gradients, the group-sparse model."""

    def __init__(self):
        self.grads: dict[int, tuple[list, float]] = {}  # seed -> (gradients, seconds to compute them)
        self.sparse: dict[int, tuple[object, float]] = {}  # seed -> (group-sparse model, seconds of training)


def _tp_make_pruner(name: str, model, example, ratio: float, ignored: list, round_to: int | None, cfg):
    import torch_pruning as tp

    common = dict(pruning_ratio=ratio, ignored_layers=ignored, global_pruning=False,
                  round_to=round_to if round_to and round_to > 1 else None)
    if name == "tp-groupnorm":
        imp_cls = getattr(tp.importance, "GroupNormImportance", None) or tp.importance.GroupMagnitudeImportance
        return tp.pruner.GroupNormPruner(model, example, importance=imp_cls(p=2), reg=cfg.groupnorm_reg, **common)
    imp = {
        "tp-l1": lambda: tp.importance.MagnitudeImportance(p=1),
        "tp-l2": lambda: tp.importance.MagnitudeImportance(p=2),
        "tp-taylor": lambda: tp.importance.TaylorImportance(),
        "tp-random": lambda: tp.importance.RandomImportance(),
    }[name]()
    return tp.pruner.MetaPruner(model, example, importance=imp, **common)


def _tp_taylor_grads(model, data: Data, cfg: CompareConfig, seed: int) -> list:
    """Gradients of the task loss on one seeded batch of ``taylor_samples`` training samples."""
    import torch

    from .train import task_loss

    a = data.arrays
    idx = np.random.default_rng(seed).permutation(len(a["x_train"]))[: cfg.taylor_samples]
    xb, yb = torch.from_numpy(a["x_train"][idx]), torch.from_numpy(a["y_train"][idx])
    m = copy.deepcopy(model).eval()  # eval: BN running stats stay as trained
    m.zero_grad(set_to_none=True)
    task_loss(data.task, m(xb), xb, yb).backward()
    return [None if p.grad is None else p.grad.detach().clone() for p in m.parameters()]


def _tp_sparse_model(dense, data: Data, cfg: CompareConfig, seed: int, ignored_names: list[str]):
    """DepGraph's group-norm method: train with GroupNormPruner's group-sparsity regularizer first."""
    import torch

    from .train import seed_everything

    model = copy.deepcopy(dense)
    example = _example(data)
    mods = dict(model.named_modules())
    pruner = _tp_make_pruner("tp-groupnorm", model, example, 0.5, [mods[n] for n in ignored_names], None, cfg)

    class RegSGD(torch.optim.SGD):
        def step(self, closure=None):
            try:
                pruner.regularize(model)  # adds the group-sparsity gradient, as in Torch-Pruning's examples
            except IndexError as e:
                transposed = [n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.conv._ConvTransposeNd)]
                hint = (f"; the model has ConvTranspose layers ({', '.join(transposed[:3])}), whose input channels "
                        "GroupNormPruner.regularize indexes as if they were a Conv's") if transposed else ""
                raise EdgepruneError(f"Torch-Pruning's GroupNormPruner.regularize failed: IndexError: {e}{hint}") from None
            return super().step(closure)

    opt = RegSGD(model.parameters(), lr=cfg.finetune_lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    seed_everything(seed)
    a = data.arrays
    seconds, _ = _fit(model, a["x_train"], a["y_train"], task=data.task, epochs=cfg.method_train_epochs,
                      lr=cfg.finetune_lr, cfg=cfg, seed=seed, optimizer=opt)
    return model.eval(), seconds


def prune_tp(spec: MethodSpec, dense, data: Data, cfg: CompareConfig, seed: int, keep: float, state: _TPState,
             log: Callable[[str], None]) -> tuple[object, dict]:
    """Prune a copy with Torch-Pruning's own pruner; bisect its pruning_ratio on TP's op counter.

    Local ranking (``global_pruning=False``) removes ``ratio`` of every group's channels, so kept MACs
    fall monotonically with the ratio; the smallest ratio whose pruned copy keeps at most ``keep`` of
    the dense conv/linear MACs by TP's counter (:func:`tp_counts`) is searched to 1e-3 and that copy
    is returned. (TP's *total* op count also holds BN/ReLU/pool element ops, which shrink linearly,
    not quadratically, with width: bisecting on it undershoots the MACs budget, e.g. 7.6% instead of
    <= 10% kept at -90% on the ResNet, and would handicap the peers.)
    """
    import torch

    example = _example(data)
    base = copy.deepcopy(dense).eval()
    names = {m: n for n, m in base.named_modules()}
    ignored_names = [names[m] for m in _ignored_modules(base, example)]
    # per-seed preparation shared by the levels (Taylor gradients, group-sparsity training): computed once,
    # its time charged in full to every level's prune_s (what one run at that level would cost)
    extra_s = 0.0
    grads = None
    if spec.name == "tp-taylor":
        if seed not in state.grads:
            t1 = time.perf_counter()
            g = _tp_taylor_grads(base, data, cfg, seed)
            state.grads[seed] = (g, time.perf_counter() - t1)
        grads, extra_s = state.grads[seed]
    if spec.name == "tp-groupnorm":
        if seed not in state.sparse:
            log(f"    tp-groupnorm: {cfg.method_train_epochs} epoch(s) of group-sparsity training (reg "
                f"{cfg.groupnorm_reg}), shared by every level of seed {seed}")
            state.sparse[seed] = _tp_sparse_model(dense, data, cfg, seed, ignored_names)
        base, extra_s = copy.deepcopy(state.sparse[seed][0]), state.sparse[seed][1]
    t0 = time.perf_counter()  # the pruning itself (bisection included), after the shared preparation
    dense_macs = tp_counts(base, example)["weight_macs"]
    round_to = spec.width_multiple or cfg.width_multiple
    cache: dict[float, tuple[object, float]] = {}

    def attempt(ratio: float):
        if ratio in cache:
            return cache[ratio]
        m = copy.deepcopy(base).eval()
        if grads is not None:
            for p, gr in zip(m.parameters(), grads):
                p.grad = None if gr is None else gr.clone()
        mods = dict(m.named_modules())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner = _tp_make_pruner(spec.name, m, example, ratio, [mods[n] for n in ignored_names], round_to, cfg)
            torch.manual_seed(seed)  # RandomImportance draws from torch's generator
            pruner.step()
        m.zero_grad(set_to_none=True)
        kept = tp_counts(m, example)["weight_macs"] / dense_macs
        cache[ratio] = (m, kept)
        return cache[ratio]

    # TP keeps int(n * (1 - r)) channels of a group of n (then rounds down to round_to) and skips a group
    # that would be left empty, so kept ops only fall monotonically while every group keeps >= 1 multiple
    from .surgery import analyze

    n_min = min((g.size for g in analyze(base, example).groups.values()), default=1)
    lo, hi = 0.0, max(0.0, 1.0 - max(1, round_to or 1) / n_min - 1e-9)
    if attempt(hi)[1] > keep:
        raise EdgepruneError(f"{spec.label}: the largest usable pruning ratio {hi:.3f} (smallest group {n_min} "
                             f"channels) keeps {attempt(hi)[1]:.1%} of MACs, more than {keep:.1%}")
    steps = 0
    while hi - lo > 1e-3:
        mid = round((lo + hi) / 2, 6)
        steps += 1
        if attempt(mid)[1] <= keep:
            hi = mid
        else:
            lo = mid
    model, kept = attempt(hi)
    for p in model.parameters():
        p.requires_grad_(True)
    info = {
        "prune_s": time.perf_counter() - t0 + extra_s, "pruning_ratio": hi, "bisection_steps": steps,
        "tp_macs_kept": kept, "width_multiple": round_to, "prep_s": extra_s or None,
    }
    return model.eval(), info


# --------------------------------------------------------------------------------------------- export / latency

def export_onnx(model, example, path: Path, check_input=None) -> float | None:
    """Export with the dynamo exporter (weights inside the file); return max |onnx - torch| on ``check_input``."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().to(memory_format=torch.contiguous_format)
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.onnx._internal.exporter._registration", "torch.export")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False, verbose=False)
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
    if check_input is None:
        return None
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = check_input.numpy().astype(np.float32)
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        want = model(check_input).numpy()
    return float(np.abs(got - want).max())


def _ort_p50_inprocess(path: Path, runs: int, warmup: int) -> float:
    """Fallback when ``measure_host`` is unavailable: p50 in this process, one ORT thread."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.zeros([d if isinstance(d, int) else 1 for d in inp.shape], dtype=np.float32)
    for _ in range(warmup):
        sess.run(None, {inp.name: x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {inp.name: x})
        ts.append((time.perf_counter() - t) * 1e3)
    return float(statistics.median(ts))


def measure_latencies(paths: list[Path], *, rounds: int, runs: int, warmup: int,
                      log: Callable[[str], None] = print) -> tuple[dict[str, dict], str]:
    """p50 latency (ms) of each ONNX file: ``rounds`` interleaved passes over all files (shuffled order,
    one fresh single-thread onnxruntime process per file and pass), median over passes.

    Interleaving spreads the drift of a shared machine over every model alike. Returns
    ``({path: {"latency_ms", "latency_spread_pct", "per_round"}}, how)``.
    """
    how = "edgeprune.bench.host.measure_host(threads=1, repeats=1) per round"
    try:
        from .bench.host import measure_host
    except Exception:  # pragma: no cover - the bench module is owned elsewhere
        measure_host = None
    per: dict[str, list[float]] = {str(p): [] for p in paths}
    for r in range(rounds):
        order = list(paths)
        np.random.default_rng(1000 + r).shuffle(order)
        for i, p in enumerate(order):
            v = None
            if measure_host is not None:
                try:
                    v = float(measure_host(p, threads=1, runs=runs, warmup=warmup, repeats=1)["p50_ms"])
                except Exception as e:  # noqa: BLE001 - fall back, but say so
                    log(f"  measure_host failed on {p.name} ({type(e).__name__}: {e}); using in-process onnxruntime")
                    measure_host = None
            if v is None:
                how = "in-process onnxruntime, intra_op_num_threads=1 (measure_host unavailable)"
                v = _ort_p50_inprocess(p, runs, warmup)
            per[str(p)].append(v)
        log(f"  latency round {r + 1}/{rounds} done ({len(order)} models)")
    out = {}
    for p, vals in per.items():
        out[p] = {"latency_ms": float(statistics.median(vals)),
                  "latency_spread_pct": 100.0 * (max(vals) / max(min(vals), 1e-12) - 1.0), "per_round": vals}
    return out, how


# --------------------------------------------------------------------------------------------- the run

def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label)


def _row_key(method: str, level: float, seed: int) -> str:
    return f"{method}|{level:g}|{seed}"


def run_compare(cfg: CompareConfig, log: Callable[[str], None] = print) -> dict:
    """Run the comparison; return ``{"rows": [...], "meta": {...}}`` (files are written by :func:`write_outputs`).

    Rows: one per (method, level, seed) plus, per seed, the dense row (method "dense", level 0) and the
    dense model after the same fine-tuning budget (method "dense+ft", level 0); a row whose method
    failed has ``error`` set and no measurements.
    """
    from .train import torch_threads

    expand_methods(cfg.methods)
    for lv in cfg.levels:
        if not 0.0 < lv < 1.0:
            raise ConfigError(f"level {lv} must be a FLOPs-removal fraction in (0, 1), e.g. 0.5,0.75,0.9")
    if not cfg.seeds:
        raise ConfigError("give at least one seed")
    with torch_threads(cfg.threads):
        return _run(cfg, log)


def _run(cfg: CompareConfig, log: Callable[[str], None]) -> dict:
    import torch

    from .train import evaluate, seed_everything

    specs = expand_methods(cfg.methods)
    out = Path(cfg.out)
    cache = out / "cache"
    t_start = time.perf_counter()
    meta = {"started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "config": asdict(cfg),
            "methods": [{"label": s.label, "name": s.name, "kind": s.kind, "width_multiple": s.width_multiple,
                         "options": dict(s.options), "summary": _method_summary(s)} for s in specs],
            "load_start": _loadavg()}

    data = load_data(cfg)  # bad input (a missing dataset) fails here, before anything is written
    (cache / "onnx").mkdir(parents=True, exist_ok=True)
    (cache / ".gitignore").write_text("*\n")
    meta["data"] = data.describe
    meta["task"], meta["metric"] = data.task, data.metric_name
    a = data.arrays
    example = _example(data)
    check = torch.from_numpy(a["x_test"][:1])
    val = (a["x_val"][: cfg.val_samples], a["y_val"][: cfg.val_samples])

    def curve_of(epochs_log: list[dict], start: float, first: float | None = None,
                 start_epochs: int = 0) -> list[list[float]]:
        """[[seconds, val metric, epochs], ...] counted from the start of training from scratch: the time
        (wall seconds, evaluation excluded; load-dependent) and the epochs trained (load-independent)."""
        pts = [[round(start, 3), first, start_epochs]] if first is not None else []
        t = start
        for i, e in enumerate(epochs_log, 1):
            t += e["seconds"]
            pts.append([round(t, 3), e.get("val_metric"), start_epochs + i])
        return pts
    dense_fp, row_fp = cfg.fingerprint(*cfg.DENSE_KEYS), cfg.fingerprint(*cfg.ROW_KEYS)
    rows_file = cache / "rows.jsonl"
    done: dict[str, dict] = {}
    if cfg.resume and rows_file.is_file():
        for line in rows_file.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r.get("_fp") == row_fp and not r.get("error") and Path(r.get("_onnx", "")).is_file():
                done[_row_key(r["method"], r["level"], r["seed"])] = r
        log(f"resuming: {len(done)} finished row(s) reused from {rows_file}")
        meta["reused_rows"] = len(done)
    elif rows_file.exists():
        rows_file.unlink()

    def record(row: dict) -> None:
        with rows_file.open("a") as f:
            f.write(json.dumps(row, default=json_default) + "\n")

    # latency depends on the architecture, not on the weights: one ONNX file per distinct compact
    # architecture (its module tree with every layer's shape), shared by the rows that have it
    arch_onnx: dict[str, Path] = {r["arch"]: Path(r["_onnx"]) for r in done.values() if r.get("arch")}

    def export_shared(model, stem: str) -> tuple[str, Path, float | None]:
        arch = hashlib.sha256(repr(model).encode()).hexdigest()[:12]
        if arch in arch_onnx and arch_onnx[arch].is_file():
            return arch, arch_onnx[arch], None
        path = cache / "onnx" / f"{stem}.onnx"
        diff = export_onnx(copy.deepcopy(model), example, path, check)
        arch_onnx[arch] = path
        return arch, path, diff

    rows: list[dict] = []
    tp_state = _TPState()
    total = len(specs) * len(cfg.levels) * len(cfg.seeds)
    n = 0
    for seed in cfg.seeds:
        # ---------------- dense (cached per seed, shared by every method and level)
        key = _row_key("dense", 0.0, seed)
        ckpt = cache / f"dense-seed{seed}.pt"
        dense = _build(cfg, data)
        if key in done and not ckpt.is_file():
            done.pop(key)  # the row survived but its checkpoint did not: retrain (never prune an untrained model)
        if key in done:
            blob = torch.load(ckpt, map_location="cpu", weights_only=True)
            if blob.get("fp") == dense_fp:
                dense.load_state_dict(blob["state_dict"])
                dense_row = done[key]
                log(f"[dense seed {seed}] reused from cache: {data.metric_name} {dense_row['metric']:.2f}")
            else:
                done.pop(key)
        if key not in done:
            seed_everything(seed)
            dense = _build(cfg, data)
            log(f"[dense seed {seed}] training {cfg.epochs} epoch(s) on {len(a['x_train'])} samples ...")
            train_s, dlog = _fit(dense, a["x_train"], a["y_train"], task=data.task, epochs=cfg.epochs, lr=cfg.lr,
                                 cfg=cfg, seed=seed, val=val)
            torch.save({"fp": dense_fp, "state_dict": dense.state_dict()}, ckpt)
            cnt = count_compact(dense, example)
            arch, onnx_path, diff = export_shared(dense, f"dense-s{seed}")
            dense_row = {
                "method": "dense", "base_method": "dense", "kind": "dense", "level": 0.0, "requested_keep": 1.0,
                "seed": seed, "width_multiple": None, "task": data.task, "metric_name": data.metric_name,
                "metric": evaluate(dense, a["x_test"], a["y_test"], data.task), "metric_before_ft": None,
                "macs": cnt["macs"], "params": cnt["params"], "tp_ops": cnt["tp_ops"], "macs_check": cnt["macs_check"],
                "widths": widths_str(cnt["widths"]), "prune_s": 0.0, "train_s": train_s, "onnx_max_abs_diff": diff,
                "arch": arch, "error": None, "_onnx": str(onnx_path), "_fp": row_fp,
                "curve": curve_of(dlog, 0.0), "finetune_epochs": 0, "own_epochs": cfg.epochs,
            }
            record(dense_row)
            log(f"[dense seed {seed}] {data.metric_name} {dense_row['metric']:.2f}, {cnt['macs']:,} MACs, "
                f"{cnt['params']:,} params, train {train_s:.1f}s")
        dense.eval()
        dmacs, dparams, dops = dense_row["macs"], dense_row["params"], dense_row["tp_ops"]
        dense_row.update(dense_metric=dense_row["metric"], dense_macs=dmacs, dense_params=dparams,
                         macs_kept=1.0, params_kept=1.0, tp_ops_kept=1.0)
        rows.append(dense_row)
        dense_end = dense_row["curve"][-1][0] if dense_row.get("curve") else dense_row["train_s"]
        dense_val = dense_row["curve"][-1][1] if dense_row.get("curve") else None
        # ---------------- the unpruned model given the same post-dense budget: what the extra epochs alone give
        ft_epochs = cfg.finetune_epochs if cfg.epoch_budget == "equal-finetune" else cfg.post_dense_epochs
        if ft_epochs > 0:
            key = _row_key(DENSE_FT, 0.0, seed)
            if key in done:
                rows.append(done[key])
            else:
                m = copy.deepcopy(dense)
                seed_everything(seed)
                ft_s, flog = _fit(m, a["x_train"], a["y_train"], task=data.task, epochs=ft_epochs,
                                  lr=cfg.finetune_lr, cfg=cfg, seed=seed, val=val)
                ft_row = {k: v for k, v in dense_row.items() if k not in ("latency_ms", "latency_spread_pct", "speedup",
                                                                         "latency_per_round")}
                ft_row.update(method=DENSE_FT, base_method=DENSE_FT, metric_before_ft=dense_row["metric"],
                              metric=evaluate(m, a["x_test"], a["y_test"], data.task), train_s=ft_s,
                              onnx_max_abs_diff=None, curve=curve_of(flog, dense_end, dense_val, cfg.epochs),
                              finetune_epochs=ft_epochs, own_epochs=0)
                record(ft_row)
                rows.append(ft_row)
                log(f"[{DENSE_FT} seed {seed}] {data.metric_name} {dense_row['metric']:.2f} -> {ft_row['metric']:.2f} "
                    f"after the fine-tuning budget, train {ft_s:.1f}s")

        # ---------------- every method x level from that dense model
        for spec in specs:
            for level in cfg.levels:
                n += 1
                keep = round(1.0 - level, 10)
                key = _row_key(spec.label, level, seed)
                tag = f"[{n}/{total} {spec.label} -{level:.0%} seed {seed}]"
                if key in done:
                    rows.append(done[key])
                    log(f"{tag} reused from cache")
                    continue
                row = {"method": spec.label, "base_method": spec.name, "kind": spec.kind, "level": level,
                       "requested_keep": keep, "seed": seed, "task": data.task, "metric_name": data.metric_name,
                       "dense_metric": dense_row["metric"], "dense_macs": dmacs, "dense_params": dparams,
                       "error": None, "_fp": row_fp}
                try:
                    plan = epoch_plan(spec, cfg)
                    seed_everything(seed)
                    if spec.kind == "torch-pruning":
                        small, info = prune_tp(spec, dense, data, cfg, seed, keep, tp_state, log)
                    else:
                        small, info = prune_edgeprune(spec, dense, data, cfg, seed, keep, log)
                    cnt = count_compact(small, example)
                    if "predicted_macs" in info and (info["predicted_macs"], info["predicted_params"]) != (
                            cnt["macs"], cnt["params"]):
                        cnt["macs_check"] += f"; plan predicted {info['predicted_macs']} MACs / " \
                                             f"{info['predicted_params']} params"
                    before = evaluate(small, a["x_test"], a["y_test"], data.task)
                    before_val = evaluate(small, val[0], val[1], data.task)
                    seed_everything(seed)
                    train_s, flog = _fit(small, a["x_train"], a["y_train"], task=data.task,
                                         epochs=plan["finetune_epochs"], lr=cfg.finetune_lr, cfg=cfg, seed=seed, val=val)
                    metric = evaluate(small, a["x_test"], a["y_test"], data.task)
                    # the clock starts at zero for a method that trains from scratch, else after the dense phase
                    start = (0.0 if plan["from_scratch"] else dense_end) + info["prune_s"]
                    arch, onnx_path, diff = export_shared(small, f"{_safe(spec.label)}-l{level:g}-s{seed}")
                    row.update(
                        width_multiple=info.get("width_multiple"), metric=metric, metric_before_ft=before,
                        macs=cnt["macs"], params=cnt["params"], macs_kept=cnt["macs"] / dmacs,
                        params_kept=cnt["params"] / dparams, tp_ops=cnt["tp_ops"], tp_ops_kept=cnt["tp_ops"] / dops,
                        macs_check=cnt["macs_check"], widths=widths_str(cnt["widths"]),
                        prune_s=info["prune_s"], train_s=train_s, onnx_max_abs_diff=diff,
                        details={k: v for k, v in info.items() if k not in ("prune_s", "width_multiple")},
                        arch=arch, _onnx=str(onnx_path), **plan,
                        curve=curve_of(flog, start, before_val,
                                       (0 if plan["from_scratch"] else cfg.epochs) + plan["own_epochs"]),
                    )
                    log(f"{tag} MACs kept {row['macs_kept']:.1%} params {row['params_kept']:.1%} "
                        f"{data.metric_name} {before:.2f} -> {metric:.2f}  prune {info['prune_s']:.1f}s "
                        f"train {train_s:.1f}s  widths {row['widths']}")
                except Exception as e:  # noqa: BLE001 - one failing method must not sink the whole comparison
                    row["error"] = f"{type(e).__name__}: {e}"
                    log(f"{tag} FAILED: {row['error']}")
                    if not isinstance(e, EdgepruneError):
                        log("".join(traceback.format_exception(e)[-4:]).rstrip())
                record(row)
                rows.append(row)

    # ---------------- latency, all models together at the end
    meta["compute_s"] = time.perf_counter() - t_start
    measurable = [r for r in rows if not r.get("error") and r.get("_onnx")]
    if cfg.latency and measurable:
        unique = list(dict.fromkeys(r["_onnx"] for r in measurable))
        meta["latency_models"] = len(unique)
        log(f"measuring latency of {len(unique)} distinct compact architectures ({len(measurable)} rows): "
            f"{cfg.latency_rounds} interleaved round(s) x {cfg.latency_runs} runs (+{cfg.latency_warmup} warm-up), "
            "1 thread ...")
        lat, how = measure_latencies([Path(p) for p in unique], rounds=cfg.latency_rounds,
                                     runs=cfg.latency_runs, warmup=cfg.latency_warmup, log=log)
        meta["latency_method"] = how
        for r in measurable:
            r.update({k: v for k, v in lat[r["_onnx"]].items() if k != "per_round"})
            r["latency_per_round"] = lat[r["_onnx"]]["per_round"]
        dense_lat = {r["seed"]: r["latency_ms"] for r in rows if r["method"] == "dense" and r.get("latency_ms")}
        for r in measurable:
            if r["seed"] in dense_lat and r.get("latency_ms"):
                r["speedup"] = dense_lat[r["seed"]] / r["latency_ms"]
    meta["wall_s"] = time.perf_counter() - t_start
    meta["load_end"] = _loadavg()
    meta["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return {"rows": rows, "meta": meta}


def _method_summary(spec: MethodSpec) -> str:
    if spec.kind == "torch-pruning":
        return TP_PEERS[spec.name]
    from .methods import METHODS

    return getattr(METHODS[spec.name], "summary", "")


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


# --------------------------------------------------------------------------------------------- summary / outputs

def _ms(vals: list[float]) -> tuple[float, float]:
    vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


SUMMARY_STATS = ("metric", "metric_before_ft", "macs_kept", "params_kept", "latency_ms", "speedup", "prune_s",
                 "train_s", "tp_ops_kept", "own_epochs", "finetune_epochs")


def summarize(rows: list[dict], target_metric: float | None = None) -> list[dict]:
    """Mean and std over seeds per (method, level), in first-seen order; failed rows are counted apart.

    With ``target_metric``: ``time_to_target_s`` (mean over the seeds that reached it) and ``reached``
    ("k/n") from each row's validation curve."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], float(r["level"])), []).append(r)
    out = []
    for (method, level), rs in groups.items():
        ok = [r for r in rs if not r.get("error")]
        s = {"method": method, "level": level, "kind": rs[0].get("kind"), "n": len(ok), "failed": len(rs) - len(ok),
             "requested_keep": 1.0 - level, "widths": ok[0].get("widths") if ok else None}
        for k in SUMMARY_STATS:
            s[k], s[k + "_std"] = _ms([r.get(k) for r in ok])
        if target_metric is not None:
            times = [time_to_target(r.get("curve"), target_metric) for r in ok]
            hit = [t for t in times if t is not None]
            s["time_to_target_s"], s["time_to_target_s_std"] = _ms(hit)
            s["epochs_to_target"], s["epochs_to_target_std"] = _ms(
                [e for e in (time_to_target(r.get("curve"), target_metric, 2) for r in ok) if e is not None])
            s["reached"] = f"{len(hit)}/{len(ok)}"
        out.append(s)
    return out


def _fmt(m: float, s: float, digits: int = 2, scale: float = 1.0) -> str:
    if m is None or math.isnan(m):
        return "–"
    if s is None or math.isnan(s) or s == 0.0:
        return f"{m * scale:.{digits}f}"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def markdown_table(summary: list[dict], metric_name: str, target_metric: float | None = None) -> str:
    unit = {"accuracy": "acc. %", "psnr": "PSNR dB"}.get(metric_name, metric_name)
    ttt = target_metric is not None
    head = (f"| method | FLOPs removal | {unit} | {unit} before FT | MACs kept % | params kept % | latency ms | "
            f"speed-up × | ideal × | epochs (own + FT) | prune s | train s |"
            + (f" time to {target_metric:g} s | epochs to {target_metric:g} | reached |" if ttt else "") + " n |")
    lines = [head, "|" + "---|" * (16 if ttt else 13)]
    for s in summary:
        ideal = 1.0 / s["macs_kept"] if s["macs_kept"] and not math.isnan(s["macs_kept"]) else float("nan")
        lines.append("| " + " | ".join([
            s["method"], "dense" if s["level"] == 0 else f"{s['level']:.0%}",
            _fmt(s["metric"], s["metric_std"]), _fmt(s["metric_before_ft"], s["metric_before_ft_std"]),
            _fmt(s["macs_kept"], s["macs_kept_std"], 1, 100), _fmt(s["params_kept"], s["params_kept_std"], 1, 100),
            _fmt(s["latency_ms"], s["latency_ms_std"], 3), _fmt(s["speedup"], s["speedup_std"]),
            "–" if math.isnan(ideal) else f"{ideal:.2f}", _epochs(s),
            _fmt(s["prune_s"], s["prune_s_std"], 1), _fmt(s["train_s"], s["train_s_std"], 1),
            *([_fmt(s["time_to_target_s"], s["time_to_target_s_std"], 0),
               _fmt(s["epochs_to_target"], s["epochs_to_target_std"], 1), s["reached"]] if ttt else []),
            str(s["n"]) + (f" ({s['failed']} failed)" if s["failed"] else ""),
        ]) + " |")
    return "\n".join(lines) + "\n"


def _epochs(s: dict) -> str:
    own, ft = s.get("own_epochs"), s.get("finetune_epochs")
    if own is None or ft is None or math.isnan(own) or math.isnan(ft):
        return "–"
    return f"{own:g} + {ft:g}"


def widths_table(summary: list[dict]) -> str:
    lines = ["| method | FLOPs removal | conv/linear output widths (first seed, in module order) |", "|---|---|---|"]
    for s in summary:
        level = "dense" if s["level"] == 0 else f"{s['level']:.0%}"
        lines.append(f"| {s['method']} | {level} | {s['widths'] or '–'} |")
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], metric_name: str, path, title: str = "") -> None:
    """Metric vs MACs kept and realised speed-up per method, as a PNG into ``path`` (a path or a binary file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    dense = [s for s in summary if s["level"] == 0]
    methods = [m for m in dict.fromkeys(s["method"] for s in summary if s["level"] > 0)]
    markers = "osD^v<>ph*Xd"
    for i, m in enumerate(methods):
        ss = sorted((s for s in summary if s["method"] == m and s["n"]), key=lambda s: s["macs_kept"])
        if not ss:
            continue
        x = [100 * s["macs_kept"] for s in ss]
        ls = "--" if ss[0]["kind"] == "torch-pruning" else "-"
        ax1.errorbar(x, [s["metric"] for s in ss], yerr=[s["metric_std"] for s in ss], label=m, capsize=3,
                     marker=markers[i % len(markers)], linestyle=ls)
        sp = [s["speedup"] for s in ss]
        if not all(math.isnan(v) for v in sp):
            ax2.errorbar(x, sp, yerr=[s["speedup_std"] for s in ss], label=m, capsize=3,
                         marker=markers[i % len(markers)], linestyle=ls)
    for d, style in zip(dense, (":", "-.")):
        if d["n"]:
            ax1.axhline(d["metric"], color="k", linestyle=style, label=f"{d['method']} ({d['metric']:.2f})")
    xs = np.linspace(5, 100, 100)
    ax2.plot(xs, 100 / xs, color="grey", linestyle=":", label="ideal (1 / MACs kept)")
    unit = {"accuracy": "test accuracy (%)", "psnr": "test PSNR (dB)"}.get(metric_name, metric_name)
    ax1.set(xlabel="MACs kept (% of dense, counted on the compact model)", ylabel=unit, title="metric vs MACs kept")
    ax2.set(xlabel="MACs kept (% of dense)", ylabel="measured speed-up vs dense (ORT, 1 thread)",
            title="realised latency speed-up")
    all_sp = [s["speedup"] for s in summary if s["n"] and not math.isnan(s["speedup"])]
    if all_sp:
        ax2.set_ylim(0, max(max(all_sp) * 1.3, 2.0))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def machine_info() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        txt = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in txt.splitlines():
            k, _, v = line.partition(":")
            k = k.strip()
            if k in ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket"):
                info[k] = v.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def versions() -> dict:
    from importlib import metadata

    out = {}
    for pkg in ("edgeprune", "torch", "torch-pruning", "onnx", "onnxscript", "onnxruntime", "numpy", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        root = Path(__file__).resolve().parents[1]
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if rev:
            out["git"] = rev + (" (uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def observations(rows: list[dict], summary: list[dict]) -> list[str]:
    """Facts computed from the results (no interpretation): MACs checks, speed-up vs ideal, failures."""
    obs = []
    ok = [r for r in rows if not r.get("error")]
    bad = [r for r in ok if r.get("macs_check") not in (None, "ok")]
    obs.append(f"MACs/params cross-check (edgeprune graph on the compact model vs Torch-Pruning's counter): "
               f"{len(ok) - len(bad)}/{len(ok)} rows agree exactly" + (f"; disagreeing: {', '.join(r['method'] + '@' + str(r['level']) for r in bad[:5])}" if bad else "."))
    req = [r for r in ok if r["level"] > 0]
    if req:
        gap = max(abs(r["macs_kept"] - r["requested_keep"]) for r in req)
        over = [r for r in req if r["macs_kept"] > r["requested_keep"] + 1e-9]
        obs.append(f"MACs kept vs requested: largest gap {100 * gap:.1f} points; rows above the request: {len(over)}.")
    eff: dict[tuple, list[str]] = {}
    for s in summary:
        if s["level"] > 0 and s["n"] and not math.isnan(s["speedup"]):
            k = (s["level"], f"{s['speedup']:.2f}", f"{1 / s['macs_kept']:.2f}", f"{s['speedup'] * s['macs_kept']:.2f}")
            eff.setdefault(k, []).append(s["method"])
    if eff:
        lines = "; ".join(f"−{lv:.0%} {', '.join(ms)}: {sp}× of ideal {ideal}× ({frac})"
                          for (lv, sp, ideal, frac), ms in eff.items())
        obs.append("Realised latency speed-up vs the MACs ratio, as speed-up × MACs kept in parentheses (1.00 = "
                   "latency fell as much as MACs): " + lines + ".")
    by_error: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("error"):
            by_error.setdefault(r["error"], []).append(r)
    for err, rs in by_error.items():
        where = ", ".join(f"{r['method']} −{r['level']:.0%} seed {r['seed']}" for r in rs)
        obs.append(f"Failed ({len(rs)} row(s): {where}): {err}")
    return obs


def write_outputs(result: dict, cfg: CompareConfig, command: str | None = None) -> dict[str, Path]:
    """Write results.csv/json, table.md, the plot and README.md into ``cfg.out``.

    ``command`` set: a fresh run (machine and versions are read now); ``None``: a rebuild that keeps
    the command, machine and versions stored in ``result["meta"]``.
    """
    rows, meta = result["rows"], result["meta"]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows, cfg.target_metric)
    if command is not None:
        meta = dict(meta, command=command, machine=machine_info(), versions=versions())
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    paths = {name: out / name for name in RESULT_FILES}

    # everything is rendered first and each file replaced atomically: an interruption never leaves a
    # truncated results.json (which --rebuild reads) beside the previous tables
    table = markdown_table(summary, meta["metric"], cfg.target_metric)
    csv_text = io.StringIO(newline="")
    w = csv.DictWriter(csv_text, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in public:
        w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r[k]))
                    for k in CSV_FIELDS})
    title = f"{cfg.model} on {meta['data']['name']} ({len(cfg.seeds)} seed(s); {_budget_phrase(cfg)})"
    png = io.BytesIO()
    plot(summary, meta["metric"], png, title)
    texts = {
        "results.json": json.dumps({"meta": meta, "rows": public, "summary": summary}, indent=1,
                                   default=json_default) + "\n",
        "results.csv": csv_text.getvalue(), "table.md": table, "README.md": readme(meta, cfg, summary, rows, table),
    }
    for name, text in texts.items():
        atomic_write_text(paths[name], text)
    atomic_write_bytes(paths["metric_vs_macs.png"], png.getvalue())
    return paths


def rebuild_outputs(out: str | Path) -> dict[str, Path]:
    """Rewrite table.md, the plot and README.md (and the CSV) of a results folder from its results.json,
    e.g. after editing ``notes.md``; nothing is trained or measured."""
    out = Path(out)
    path = out / "results.json"
    if not path.is_file():
        raise ConfigError(f"{path} not found: --rebuild needs the results folder of an earlier run")
    doc = json.loads(path.read_text())
    fields = set(CompareConfig.__dataclass_fields__)
    stored = dict(doc["meta"]["config"])
    stored.setdefault("epoch_budget", "equal-finetune")  # results written before the option existed
    cfg = CompareConfig(**{k: v for k, v in stored.items() if k in fields})
    cfg.out = str(out)
    return write_outputs({"rows": doc["rows"], "meta": doc["meta"]}, cfg, None)


def _budget_phrase(cfg: CompareConfig) -> str:
    if cfg.epoch_budget == "equal-finetune":
        return f"FT {cfg.finetune_epochs} epoch(s)"
    return f"{cfg.post_dense_epochs} epoch(s) per method after the dense phase"


def budget_text(cfg: CompareConfig) -> str:
    """The epoch budget of a comparison, in words (README's Budget line)."""
    common = f"dense {cfg.epochs} epoch(s) per seed (shared by every method); "
    if cfg.epoch_budget == "equal-finetune":
        return common + (f"fine-tuning {cfg.finetune_epochs} epoch(s) for every method; methods that train before "
                         f"pruning (pl-gates' gates, tp-groupnorm's sparsity) get {cfg.method_train_epochs} epoch(s) of "
                         "their own training on top, counted in *prune s* (`--epoch-budget equal-finetune`)")
    return common + (f"then the same **{cfg.post_dense_epochs} epoch(s) for every method** (`--epoch-budget "
                     f"equal-total`): a method that trains before pruning (pl-gates' gates, tp-groupnorm's sparsity "
                     f"training, {cfg.method_train_epochs} epoch(s) by default) spends part of them on its own "
                     "training (counted in *prune s*) and fine-tunes the rest, the others fine-tune them all; a method "
                     "that trains from scratch also gets the dense phase's epochs; *epochs (own + FT)* shows the split")


def readme(meta: dict, cfg: CompareConfig, summary: list[dict], rows: list[dict], table: str) -> str:
    m, v, d = meta["machine"], meta["versions"], meta["data"]
    out = Path(cfg.out)
    notes = (out / "notes.md").read_text().strip() if (out / "notes.md").is_file() else ""
    tp_methods = [x["label"] for x in meta["methods"] if x["kind"] == "torch-pruning"]
    ep_methods = [x["label"] for x in meta["methods"] if x["kind"] == "edgeprune"]
    test_n = d.get("n_test")
    L = [
        f"# {cfg.model} on {d['name']}: pruning methods side by side",
        "",
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['started']} → {meta['finished']} (UTC); wall {meta['wall_s'] / 60:.1f} min "
        f"({meta['compute_s'] / 60:.1f} min training/pruning/export, rest latency)"
        + (f"; this invocation reused {meta['reused_rows']} finished rows of an earlier one (`--resume`), so its wall "
           "time does not include them" if meta.get("reused_rows") else ""),
        f"- Machine: {m.get('Model name', '?')}, {m.get('CPU(s)', m.get('cpu_count'))} CPU(s) "
        f"({m.get('Core(s) per socket', '?')} core(s)/socket × {m.get('Thread(s) per core', '?')} thread(s)/core), "
        f"{m['platform']}; shared with other jobs: load average {meta.get('load_start')} at start, "
        f"{meta.get('load_end')} at end",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"- Data: {d['name']} ({d.get('source', '')}); {d['n_train']} training samples"
        + (f" (the first {cfg.train_limit} of the split made with data seed {cfg.data_seed})" if cfg.train_limit else "")
        + f", test metric on all {test_n} test samples; inputs "
        + ("normalised" if d.get("normalized_inputs") else "raw pixels in [0, 1] (sigmoid autoencoder)"),
        f"- Model: `{cfg.model}` {cfg.model_options or ''} ({meta['task']}, metric {meta['metric']}); "
        f"dense {rows[0]['macs']:,} MACs, {rows[0]['params']:,} params",
        f"- Budget: {budget_text(cfg)}; SGD momentum 0.9 nesterov, cosine, batch {cfg.batch_size}, lr {cfg.lr} "
        f"(fine-tune {cfg.finetune_lr}), weight decay {cfg.weight_decay}; torch threads {cfg.threads}; "
        f"seeds {', '.join(map(str, cfg.seeds))}; FLOPs-removal levels {', '.join(f'{x:g}' for x in cfg.levels)}",
        f"- Methods: edgeprune {', '.join(ep_methods) or '(none)'}; Torch-Pruning {', '.join(tp_methods) or '(none)'}",
        f"- Latency: {meta.get('latency_method', 'not measured')}; {meta.get('latency_models', 0)} distinct compact "
        f"architectures (rows sharing one share its ONNX file); {cfg.latency_rounds} interleaved round(s) × "
        f"{cfg.latency_runs} runs (+{cfg.latency_warmup} warm-up), batch 1; value = median over rounds of each "
        "round's p50",
        "",
        "## Results (mean ± std over seeds)",
        "",
        table,
        "MACs and params are counted on the compact model after pruning (see protocol). *speed-up* = dense latency / "
        "latency (same seed); *ideal* = 1 / MACs kept. *before FT* = test metric right after pruning. "
        f"*{DENSE_FT}* = the dense model given the same post-dense budget (what the extra epochs alone give)."
        + (f" *time to {cfg.target_metric:g}* = training seconds from scratch (the shared dense phase included, for "
           f"methods that start from it) until the deployable model first reaches {cfg.target_metric:g} on "
           f"{cfg.val_samples} validation samples (checked after pruning and after every fine-tuning epoch; evaluation "
           "time excluded), mean over the seeds that reached it; *epochs to* counts the epochs trained instead "
           "(the dense phase's included; a pl-gates epoch costs more than a plain one, see its overhead benchmark)."
           if cfg.target_metric is not None else ""),
        "",
        "![metric vs MACs kept](metric_vs_macs.png)",
        "",
        "## Kept widths",
        "",
        widths_table(summary),
        "## Computed observations",
        "",
        *[f"- {o}" for o in observations(rows, summary)],
        "",
    ]
    if notes:
        L += ["## Notes", "", notes, ""]
    L += [
        "## Protocol",
        "",
        "1. Per seed, the dense model is trained once (`edgeprune.train.train`, channels-last) and every method "
        "and level starts from a copy of it.",
        "2. edgeprune methods (registry, `edgeprune.methods.get_method`) get a `FitContext` with "
        "`flops_keep = 1 - level` and return a plan; `edgeprune.surgery.compact_and_verify` cuts the model and checks "
        "it against the masked model. *prune s* = `fit` + compaction + verification.",
        "3. Torch-Pruning peers use TP's own API on a copy: `tp.pruner.MetaPruner(model, example_inputs, "
        "importance=..., pruning_ratio=r, ignored_layers=[output layer], global_pruning=False)` with "
        "`MagnitudeImportance(p=1|2)`, `TaylorImportance()` (gradients of the task loss on one seeded batch of "
        f"{cfg.taylor_samples} training samples, BN in eval mode), `RandomImportance()`; *tp-groupnorm* is TP's "
        "`GroupNormPruner` (the DepGraph group-norm method; Torch-Pruning 1.6 has no `GroupNormImportance` class, its "
        "group-norm criterion is `GroupMagnitudeImportance(p=2)`, which ranks exactly like `MagnitudeImportance(p=2)` "
        f"under local pruning) with {cfg.method_train_epochs} epoch(s) of group-sparsity training "
        f"(`pruner.regularize`, reg {cfg.groupnorm_reg}) before pruning; that training runs once per seed, is shared "
        "by its levels and is counted in full in each level's *prune s* (as are tp-taylor's gradients). The level is hit by bisecting `r` to 1e-3 in [0, 1 - 1/(smallest group)] (above it TP skips "
        "groups that would be left empty, so kept ops stop falling monotonically): "
        "the smallest `r` whose pruned copy keeps at most `1 - level` of the dense MACs by TP's own counter "
        "(`tp.utils.count_ops_and_params(layer_wise=True)`, conv/linear entries without their bias term, i.e. the "
        "same MACs every row reports; TP's total also counts BN/ReLU/pool element ops, which shrink only linearly "
        "with width, and bisecting on it undershot the budget, e.g. 7.6% instead of <= 10% kept at -90%); "
        "*prune s* includes the bisection (~10 pruned copies). A method written `NAME@N` rounds widths to multiples "
        "of N: edgeprune's `width_multiple=N` (rounds each kept width up, then lowers the uniform ratio to stay in "
        "budget), TP's `round_to=N` (rounds the remaining width down).",
        "4. Everyone is then fine-tuned with the lr and seed-fixed batch order, for the epochs the budget line gives; "
        "the metric is on the test split. A method written `NAME[key=value,...]` runs with those options (e.g. "
        "`pl-gates[gamma=0]`, the ablation without the condition-number term).",
        "5. MACs/params: `edgeprune.surgery.analyze(compact_model).dense_cost()` (conv/linear weight MACs); "
        "cross-checked against the sum of `tp.utils.count_ops_and_params(layer_wise=True)`'s conv/linear entries minus their bias term "
        "(TP also counts BN/ReLU/pool element ops, reported as `tp_ops`, and counts ConvTranspose at output "
        "positions, converted to input positions for the check).",
        "6. Export: `torch.onnx.export(model, (x,), path, dynamo=True, external_data=False)`, batch 1, compared with "
        "torch (`onnx_max_abs_diff` in the CSV). Latency is measured after all training, in interleaved rounds of "
        "fresh processes, so the drift of the shared machine spreads over every model alike. Latency depends on the "
        "architecture, not on the weights, so one ONNX file is exported and measured per distinct compact architecture "
        "(`arch` = hash of the module tree with every layer's shape) and rows with the same architecture share it "
        "(their parity check is the first row's; latency std over seeds is then 0 where all seeds share one "
        "architecture).",
        "",
        "Files: `results.csv` / `results.json` (one row per method, level and seed; dense rows have level 0), "
        "`table.md`, `metric_vs_macs.png`. `cache/` (dense checkpoints, ONNX files, rows for `--resume`) is not "
        "committed.",
        "",
    ]
    return "\n".join(L)


# --------------------------------------------------------------------------------------------- CLI

QUICK = {"dataset": "digits", "model": "resnet", "levels": [0.5, 0.75], "seeds": [0], "epochs": 4, "method_epochs": 1,
         "finetune_epochs": 1, "train_limit": 0, "latency_runs": 20, "latency_warmup": 5, "latency_rounds": 3,
         "taylor_samples": 128}


def make_parser(prog: str = "edgeprune compare") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark pruning methods side by side (edgeprune's registry + Torch-Pruning peers): "
                    "train dense once per seed, prune to each FLOPs-removal level, compact, fine-tune with one "
                    "budget, count MACs on the compact model, measure single-thread onnxruntime latency.",
        epilog=f"Torch-Pruning peers: {', '.join(TP_PEERS)}. NAME@N rounds widths to multiples of N for that method.",
    )
    d = CompareConfig()
    p.add_argument("--dataset", help=f"dataset (default {d.dataset}; --quick: digits)")
    p.add_argument("--data-dir", help="directory of the dataset files (fashion-mnist)")
    p.add_argument("--model", help=f"built-in model (default {d.model})")
    p.add_argument("--model-options", type=json.loads, metavar="JSON", help='model builder options, e.g. \'{"widths": [16, 32]}\'')
    p.add_argument("--levels", help="comma list of FLOPs-removal fractions (default 0.5,0.75,0.9; --quick 0.5,0.75)")
    p.add_argument("--methods", help="comma list of methods, or all | edgeprune | tp (default all); "
                                     "`--list-methods` shows them")
    p.add_argument("--seeds", help="comma list of seeds (default 0,1,2; --quick 0)")
    p.add_argument("--epochs", type=int, help=f"dense training epochs (default {d.epochs})")
    p.add_argument("--finetune-epochs", type=int, help=f"fine-tuning epochs, same for every method (default {d.finetune_epochs})")
    p.add_argument("--train-limit", type=int, help="use only the first K training samples (0 = all)")
    p.add_argument("--data-seed", type=int, help="seed of the data split, the same for every run seed (default 0)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help=f"dense lr (default {d.lr})")
    p.add_argument("--finetune-lr", type=float, help=f"fine-tune lr (default {d.finetune_lr})")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--width-multiple", type=int, help="round kept widths to this multiple for every method (default 1)")
    p.add_argument("--method-options", type=json.loads, metavar="JSON",
                   help='options per registry method, e.g. \'{"pl-gates": {"gamma": 0.1}}\'')
    p.add_argument("--threads", type=int, help="torch threads for training (default 1: fastest on a shared 2-core host)")
    p.add_argument("--taylor-samples", type=int, help="training samples for tp-taylor's gradient (default 256)")
    p.add_argument("--groupnorm-reg", type=float, help="tp-groupnorm's group-sparsity coefficient (default 5e-4)")
    p.add_argument("--epoch-budget", choices=EPOCH_BUDGETS,
                   help="equal-total (default): every method gets --method-epochs + --finetune-epochs epochs after the "
                        "dense phase, its own training included; equal-finetune: every method fine-tunes "
                        "--finetune-epochs and methods that train get --method-epochs on top")
    p.add_argument("--target-metric", type=float,
                   help="report the training time until the deployable model first reaches this validation metric")
    p.add_argument("--val-samples", type=int, help="validation samples for the per-epoch curves (default 2000)")
    p.add_argument("--method-epochs", type=int,
                   help="epochs of the methods' own training before pruning (pl-gates' gate training, "
                        "tp-groupnorm's sparsity training; default: --epochs, as in the pipeline)")
    p.add_argument("--latency-runs", type=int, help="timed runs per latency measurement (default 50)")
    p.add_argument("--latency-warmup", type=int, help="warm-up runs (default 10)")
    p.add_argument("--latency-rounds", type=int, help="interleaved fresh-process rounds; median reported (default 3)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--out", help="results folder (default benchmarks/results/<dataset>-<model>[-quick])")
    p.add_argument("--resume", action="store_true", help="reuse dense models and finished rows from <out>/cache")
    p.add_argument("--quick", action="store_true",
                   help="digits, resnet, levels 0.5,0.75, seed 0, 4+1 epochs, short latency: a few minutes")
    p.add_argument("--rebuild", action="store_true",
                   help="only rewrite table.md, the plot and README.md of --out from its results.json "
                        "(e.g. after editing <out>/notes.md, which README.md includes)")
    p.add_argument("--list-methods", action="store_true", help="list the methods that can be compared and exit")
    p.add_argument("--quiet", action="store_true", help="only print the final table")
    return p


def _floats(s: str, what: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--{what}: expected a comma list of numbers, got {s!r}") from None


def _ints(s: str, what: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--{what}: expected a comma list of integers, got {s!r}") from None


def config_from_args(a: argparse.Namespace) -> CompareConfig:
    base = dict(QUICK) if a.quick else {}
    cfg = CompareConfig(**base)
    simple = ("dataset", "data_dir", "model", "model_options", "epochs", "finetune_epochs", "train_limit", "data_seed",
              "batch_size", "lr", "finetune_lr", "weight_decay", "width_multiple", "method_options", "threads",
              "taylor_samples", "groupnorm_reg", "method_epochs", "latency_runs", "latency_warmup",
              "latency_rounds", "out", "epoch_budget", "target_metric", "val_samples")
    for k in simple:
        v = getattr(a, k)
        if v is not None:
            setattr(cfg, k, v)
    if a.levels is not None:
        cfg.levels = _floats(a.levels, "levels")
    if a.seeds is not None:
        cfg.seeds = _ints(a.seeds, "seeds")
    if a.methods is not None:
        cfg.methods = split_methods(a.methods)
    cfg.latency = not a.no_latency
    cfg.resume = a.resume
    if a.out is None:
        cfg.out = f"benchmarks/results/{cfg.dataset}-{cfg.model}" + ("-quick" if a.quick else "")
    for k in ("epochs", "finetune_epochs", "method_epochs", "latency_runs", "latency_rounds", "threads", "batch_size",
              "val_samples"):
        v = getattr(cfg, k)
        if v is not None and v < (0 if "epochs" in k else 1):
            raise ConfigError(f"--{k.replace('_', '-')} must be {'>= 0' if 'epochs' in k else '>= 1'}")
    expand_methods(cfg.methods)  # validate names before any training
    return cfg


def main(argv: list[str] | None = None, prog: str = "edgeprune compare") -> int:
    """``edgeprune compare`` / ``tools/benchmark_methods.py``: returns the exit status (0 ok, 1 a row failed,
    2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    a = make_parser(prog).parse_args(argv)
    try:
        if a.list_methods:
            for s in expand_methods("all"):
                print(f"{s.label:14s} {s.kind:13s} {_method_summary(s)}")
            return 0
        if a.rebuild:
            if not a.out:
                raise ConfigError("--rebuild needs --out <results folder>")
            paths = rebuild_outputs(a.out)
            print(f"rebuilt {', '.join(p.name for p in paths.values())} in {a.out}/")
            return 0
        cfg = config_from_args(a)
        log = (lambda s: None) if a.quiet else (lambda s: print(s, flush=True))
        result = run_compare(cfg, log)
        paths = write_outputs(result, cfg, f"{prog} {shlex.join(argv)}".strip())
        print(paths["table.md"].read_text(), end="")
        print(f"results in {cfg.out}/ ({', '.join(p.name for p in paths.values())})")
        failed = [r for r in result["rows"] if r.get("error")]
        if failed:
            print(f"edgeprune: {len(failed)} row(s) failed; see README.md", file=sys.stderr)
            return 1
        return 0
    except EdgepruneError as e:
        print(f"edgeprune: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edgeprune: interrupted; rerun with --resume to reuse finished rows", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
