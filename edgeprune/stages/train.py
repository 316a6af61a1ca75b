"""Stage 1: train the dense model (the reference every later number is compared with)."""

from __future__ import annotations

from ..models import build_arch, example_for, load_weights
from ..runfolder import write_json
from ..surgery import PruningPlan, analyze, save_compact
from ..train import evaluate, seed_everything, train
from .common import metric_record, train_options

name = "train"
summary_file = "train.json"


def depends(b):
    """The config keys of the dense model, and the contents (not only the paths) of its input files."""
    c = b.cfg
    return [c["dataset"], c["data_dir"], c["data_limit"], c["data"], c["model"], c["model_options"], c["seed"],
            c["weights"], c["input_shape"], c["task"], c["metric"], b.input_digests,
            c["train"]["epochs"], c["train"]["batch_size"], c["train"]["lr"], c["train"]["weight_decay"]]


def describe(b):
    return f"{b.cfg['model']} on {b.data.name} ({len(b.data.x_train)} samples, {b.cfg['train']['epochs']} epochs)"


def run(b) -> list[str]:
    a = b.arrays
    d = b.data
    arch = b.arch
    seed_everything(b.cfg["seed"])
    model = build_arch(arch)
    if b.cfg["weights"]:
        load_weights(model, b.cfg["weights"])
    ep = b.cfg["train"]["epochs"]
    hist = train(
        model, a["x_train"], a["y_train"], task=b.task, epochs=ep, val=(a["x_val"], a["y_val"]), metric=b.metric,
        on_step=lambda s, t: b.ui.progress("training", s, t),
        on_epoch=lambda r: b.ui.log(f"  epoch {r['epoch']}/{ep}  loss {r['loss']:.4f}  val {r['val_metric']:.2f}"),
        **train_options(b),
    )
    graph = analyze(model, example_for(arch))
    save_compact(b.run / "dense.pt", arch, PruningPlan(method="dense"), model)
    summary = {
        "arch": arch,
        "task": b.task,
        "dataset": d.describe(),
        **metric_record(b),
        "history": hist.to_list(),
        "val_metric": evaluate(model, a["x_val"], a["y_val"], b.task, b.metric),
        "test_metric": evaluate(model, a["x_test"], a["y_test"], b.task, b.metric),
        "cost": graph.dense_cost(),
        "graph": graph.summary(),
        "seconds": sum(r["seconds"] for r in hist.to_list()),
    }
    write_json(b.run / summary_file, summary)
    b.outcome[name] = summary
    b.ui.log(f"  dense test {b.metric_name} {summary['test_metric']:.4g}, {summary['cost']['params']:,} params, "
             f"{summary['cost']['macs']:,} MACs")
    return ["dense.pt", summary_file]
