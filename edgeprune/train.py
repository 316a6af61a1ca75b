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
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .metrics import get_metric

TASK_METRIC = {"classification": "accuracy", "reconstruction": "psnr"}


def task_loss(task: str, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
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
            outs.append(model(torch.from_numpy(x[i : i + batch_size])).numpy())
    return np.concatenate(outs) if outs else np.zeros((0,))


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray | None, task: str, metric: str | None = None) -> float:
    """The task's metric (or ``metric``: a registered name or file.py:function) on (x, y)."""
    out = predict(model, x)
    metric = get_metric(metric or TASK_METRIC[task])
    return metric(out, x if task == "reconstruction" else y)


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
) -> History:
    """Train in place. ``extra_loss(model, x, y, step)`` adds a regularizer (method hooks)."""
    hist = History()
    if epochs <= 0:
        return hist
    g = torch.Generator().manual_seed(seed)
    params = list(model.parameters()) + list(extra_params or [])
    opt = optimizer or torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    n = len(x_train)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    step = 0
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=g)
        loss_sum, extra_sum = 0.0, 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            xb, yb = xt[idx], yt[idx]
            out = model(xb)
            loss = task_loss(task, out, xb, yb)
            total_loss = loss
            if extra_loss is not None:
                extra = extra_loss(model, xb, yb, step)
                total_loss = loss + extra
                extra_sum += float(extra.detach())
            opt.zero_grad(set_to_none=True)
            total_loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach())
            step += 1
            if on_step:
                on_step(step, total)
        rec = {
            "epoch": epoch + 1,
            "loss": loss_sum / steps_per_epoch,
            "extra_loss": extra_sum / steps_per_epoch,
            "seconds": time.perf_counter() - t0,
        }
        if val is not None:
            rec["val_metric"] = evaluate(model, val[0], val[1], task, metric)
        hist.epochs.append(rec)
        if on_epoch:
            on_epoch(rec)
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
