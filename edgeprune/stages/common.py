"""Helpers the stages share: loading replayable models from the run folder, training options,
and the record of the run's one metric."""

from __future__ import annotations

from ..models import build_arch, example_for
from ..surgery import load_compact


def load_model(b, filename: str):
    """(model, plan, arch) replayed from a run-folder checkpoint. The architecture the checkpoint names is
    built from a registry, or from code the user named (:meth:`Build.own_arch`); code that only the
    checkpoint names is refused with a one-line error, never imported."""
    from ..imports import UnnamedCodeError, refuse_message

    def build(arch: dict):
        mine = b.own_arch(arch)
        try:
            return build_arch(mine)
        except UnnamedCodeError:
            raise UnnamedCodeError(refuse_message(mine["model"], "model factory", f"checkpoint {b.run / filename}")) from None

    return load_compact(b.run / filename, build, example_for)


def train_options(b) -> dict:
    t = b.cfg["train"]
    return {"batch_size": t["batch_size"], "lr": t["lr"], "weight_decay": t["weight_decay"], "seed": b.cfg["seed"]}


def metric_record(b) -> dict:
    """The run's metric as every summary records it next to its values: name and unit ("%", "dB";
    "" for a user metric without a ``unit`` attribute: its own scale)."""
    from ..metrics import metric_unit

    return {"metric_name": b.metric_name, "metric_unit": metric_unit(b.metric_name)}
