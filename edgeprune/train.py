"""Training and evaluation loops shared by the pipeline and the pruning methods.

Tasks: ``classification`` (cross-entropy, metric accuracy %) and ``reconstruction``
(MSE to the input, metric PSNR dB). Training uses SGD with momentum (Nesterov), a cosine
schedule and a deterministic shuffle from the seed.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import distributed as D
from .metrics import get_metric
from .models import primary_output

TASK_METRIC = {"classification": "accuracy", "reconstruction": "psnr"}


def task_loss(task: str, out, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The task's loss on the model's output (of a tuple of outputs, the first: see models.output_list)."""
    out = primary_output(out)
    if task == "reconstruction":
        return F.mse_loss(out, x)
    return F.cross_entropy(out, y)


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)

    def to_list(self) -> list[dict]:
        return self.epochs


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outs.append(primary_output(model(torch.from_numpy(x[i : i + batch_size]))).numpy())  # the task output
    return np.concatenate(outs) if outs else np.zeros((0,))


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray | None, task: str, metric: str | None = None) -> float:
    """The task's metric (or ``metric``: a registered name or file.py:function) on (x, y)."""
    out = predict(model, x)
    metric = get_metric(metric or TASK_METRIC[task])
    return metric(out, x if task == "reconstruction" else y)


@dataclass
class Schedule:
    """What a hook learns before training starts (:meth:`TrainHook.begin`)."""

    epochs: int
    steps_per_epoch: int
    total_steps: int
    batch_size: int
    samples: int


class TrainHook:
    """How a method plugs into the ONE training loop (:func:`train`). Every method is optional.

    The precedents: Torch-Pruning's ``pruner.regularize(model)`` after backward, NNCF's
    ``compression_ctrl.loss()`` plus its scheduler. A hook never runs a loop of its own.

    * ``begin(schedule)``: the number of epochs / steps before anything is built (warm-ups, schedules);
    * ``params()``: extra parameter groups, each a dict ``{"params": [...], "lr": ..., "optimizer": "sgd" |
      "adam", **optimizer options}``; groups of one optimizer kind share one optimizer and every
      group follows the loop's cosine schedule unless it sets ``"constant_lr": True``. Model parameters
      listed here leave the default SGD group (so a hook may also give part of the model its own lr);
    * ``loss(model, batch, step) -> tensor``: an extra loss term; ``batch = (x, y)``, ``step`` the 0-based
      index of the step, the model's forward of this batch already done;
    * ``after_backward(model, step)``: gradients exist and the optimizers have not stepped (add or edit
      gradients, like Torch-Pruning's ``regularize``);
    * ``after_step(model, step)``: after the optimizer step (anneal, clamp / project, re-apply masks,
      remove a structure for good);
    * ``after_epoch(model, epoch) -> dict``: called after each epoch (1-based) before validation; the dict is
      merged into the epoch's record (curves for the report).
    """

    def begin(self, schedule: Schedule) -> None:
        pass

    def params(self) -> list[dict]:
        return []

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> torch.Tensor | None:
        return None

    def after_backward(self, model: nn.Module, step: int) -> None:
        pass

    def after_step(self, model: nn.Module, step: int) -> None:
        pass

    def after_epoch(self, model: nn.Module, epoch: int) -> dict | None:
        return None


class _LegacyHook(TrainHook):
    """``extra_loss`` / ``extra_params`` keyword arguments of :func:`train`, as a hook."""

    def __init__(self, extra_loss, extra_params):
        self.extra_loss, self.extra_params = extra_loss, list(extra_params or [])

    def params(self):
        return [{"params": self.extra_params}] if self.extra_params else []

    def loss(self, model, batch, step):
        return self.extra_loss(model, batch[0], batch[1], step) if self.extra_loss else None


def _call(hook, name: str, *args):
    fn = getattr(hook, name, None)
    return fn(*args) if fn is not None else None


def _optimizers(model: nn.Module, hooks, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
    """The default SGD group (model parameters no hook claims) plus the hooks' groups, one optimizer per kind."""
    groups = [dict(g) for h in hooks for g in (_call(h, "params") or [])]
    claimed = {id(p) for g in groups for p in g["params"]}
    sgd = {"lr": lr, "momentum": 0.9, "weight_decay": weight_decay, "nesterov": True}
    by_kind: dict[str, list[dict]] = {"sgd": [{"params": [p for p in model.parameters() if id(p) not in claimed]}]}
    for g in groups:
        by_kind.setdefault(g.pop("optimizer", "sgd"), []).append(g)
    out = []
    for kind, gs in by_kind.items():
        gs = [g for g in gs if list(g["params"])]
        if not gs:
            continue
        if kind == "sgd":
            out.append(torch.optim.SGD(gs, **sgd))
        elif kind == "adam":
            out.append(torch.optim.Adam(gs, lr=lr))
        else:
            raise ValueError(f"hook parameter group asks for optimizer {kind!r}; use 'sgd' or 'adam'")
    return out


def _outside_params(model: nn.Module, opts) -> list[torch.Tensor]:
    """Trainable parameters of the optimizers that are not the model's (DDP averages only the model's)."""
    own = {id(p) for p in model.parameters()}
    return [p for o in opts for gr in o.param_groups for p in gr["params"] if id(p) not in own and p.requires_grad]


def train(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    task: str = "classification",
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    seed: int = 0,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    metric: str | None = None,
    extra_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None,
    extra_params: list[nn.Parameter] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    hooks: Sequence[TrainHook] | TrainHook = (),
    generator: torch.Generator | None = None,
) -> History:
    """Train in place: the one loop of plain training, fine-tuning and every training method.

    SGD (momentum 0.9, Nesterov, ``weight_decay``) on the model's parameters plus the ``hooks``'
    parameter groups (:class:`TrainHook`), a cosine schedule over all steps, a deterministic
    shuffle from ``seed`` (or from ``generator``, which a hook may share to draw its own noise in
    a reproducible order). ``extra_loss(model, x, y, step)`` / ``extra_params`` are the older
    spelling of a hook's ``loss`` / ``params``. ``optimizer`` replaces the loop's optimizers.

    Under torchrun (:mod:`edgeprune.distributed`) the model runs in DistributedDataParallel and each rank
    takes ``batch_size / world`` samples of every global batch of the same shuffle; hooks get the unwrapped
    model, hook parameters outside it have their gradients averaged, and the loss record is the ranks' mean.
    """
    hist = History()
    if epochs <= 0:
        return hist
    hooks = [hooks] if isinstance(hooks, TrainHook) or not isinstance(hooks, (list, tuple)) else list(hooks)
    if extra_loss is not None or extra_params:
        hooks.append(_LegacyHook(extra_loss, extra_params))
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    n = len(x_train)
    # under torchrun: batch_size stays the global batch, each rank takes its shard (distributed.shard)
    world, local_bs = D.world_size(), D.check_batch(batch_size)
    steps_per_epoch = max(1, math.ceil(math.ceil(n / world) / local_bs))
    total = epochs * steps_per_epoch
    for h in hooks:
        _call(h, "begin", Schedule(epochs, steps_per_epoch, total, batch_size, n))
    opts = [optimizer] if optimizer is not None else _optimizers(model, hooks, lr, weight_decay)
    cosine = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))  # noqa: E731
    # a hook's group with "constant_lr": True keeps its lr (e.g. projected SGD on probabilities)
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, [(lambda s: 1.0) if g.get("constant_lr") else cosine
                                                    for g in o.param_groups]) for o in opts]
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    net = D.wrap(model)  # DDP under torchrun (weights, gates, coefficients in the module: synchronised)
    outside = _outside_params(model, opts) if net is not model else []
    step = 0
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        perm = D.shard(torch.randperm(n, generator=g))
        loss_sum, extra_sum = 0.0, 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * local_bs : (b + 1) * local_bs]
            xb, yb = xt[idx], yt[idx]
            out = net(xb)
            loss = task_loss(task, out, xb, yb)
            total_loss = loss
            for h in hooks:
                extra = _call(h, "loss", model, (xb, yb), step)
                if extra is not None:
                    total_loss = total_loss + extra
                    extra_sum += float(extra.detach())
            for o in opts:
                o.zero_grad(set_to_none=True)
            total_loss.backward()
            if outside:  # hook parameters DDP does not own: average their gradients like DDP does
                D.all_reduce_mean([p.grad for p in outside])
            for h in hooks:
                _call(h, "after_backward", model, step)
            for o in opts:
                o.step()
            for s in scheds:
                s.step()
            for h in hooks:
                _call(h, "after_step", model, step)
            loss_sum += float(loss.detach())
            step += 1
            if on_step:
                on_step(step, total)
        rec = {
            "epoch": epoch + 1,
            "loss": D.all_reduce_mean(loss_sum / steps_per_epoch) if world > 1 else loss_sum / steps_per_epoch,
            "extra_loss": extra_sum / steps_per_epoch,
            "seconds": time.perf_counter() - t0,
        }
        for h in hooks:
            rec.update(_call(h, "after_epoch", model, epoch + 1) or {})
        if val is not None and len(val[0]):
            rec["val_metric"] = evaluate(model, val[0], val[1], task, metric)
        hist.epochs.append(rec)
        if on_epoch:
            on_epoch(rec)
    D.broadcast_buffers(model)  # every rank ends with rank 0's batch-norm statistics
    model.eval()
    return hist


@contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch threads (0: leave torch's default), then restore the previous count."""
    prev = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


#: channels-last training is several times faster on CPU, but oneDNN's blocked kernels pad channels to the SIMD
#: width (8 floats), and with a channel count that is not a multiple of it the channels-last 1x1 strided
#: backward-weights kernel (jit_1x1:avx2) corrupted the heap on an AVX2 AMD EPYC (Zen 3) host ("free(): invalid next size",
#: in mkldnn_convolution_backward_weights; torch 2.13.0+cpu): a pruned model's odd widths trained in NCHW instead
CHANNELS_LAST_MULTIPLE = 8


def channels_last_is_safe(model: nn.Module) -> bool:
    """Whether every 2-D convolution of ``model`` has input and output channel counts that are multiples of
    :data:`CHANNELS_LAST_MULTIPLE`, the input of a dense stem excepted (1-4 image channels)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            cin, cout = m.in_channels, m.out_channels
            if cout % CHANNELS_LAST_MULTIPLE or (cin % CHANNELS_LAST_MULTIPLE and not (m.groups == 1 and cin <= 4)):
                return False
    return True


@contextmanager
def training_layout(model: nn.Module):
    """Train ``model`` in channels-last layout where that is safe (:func:`channels_last_is_safe`), else in the
    default layout; the model leaves in the default (contiguous) layout either way."""
    model.to(memory_format=torch.channels_last if channels_last_is_safe(model) else torch.contiguous_format)
    try:
        yield model
    finally:
        model.to(memory_format=torch.contiguous_format)
