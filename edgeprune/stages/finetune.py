"""Stage 4: recovery training of the compact model (replayed from compact.pt)."""

from __future__ import annotations

from ..runfolder import write_json
from ..surgery import save_compact
from ..train import evaluate, train
from .common import load_model, metric_record, train_options

name = "finetune"
summary_file = "finetune.json"


def depends(b):
    return [b.cfg["train"]["finetune_epochs"]]


def describe(b):
    return f"{b.cfg['train']['finetune_epochs']} epochs"


def run(b) -> list[str]:
    model, plan, arch = load_model(b, "compact.pt")
    a = b.arrays
    ep = b.cfg["train"]["finetune_epochs"]
    opts = train_options(b)
    opts["lr"] = opts["lr"] * 0.5
    before = evaluate(model, a["x_test"], a["y_test"], b.task, b.metric)
    hist = train(model, a["x_train"], a["y_train"], task=b.task, epochs=ep, val=(a["x_val"], a["y_val"]), metric=b.metric,
                 on_step=lambda s, t: b.ui.progress("fine-tuning", s, t), **opts)
    save_compact(b.run / "model.pt", arch, plan, model)
    summary = {
        "epochs": ep,
        **metric_record(b),
        "history": hist.to_list(),
        "test_metric_before": before,
        "test_metric": evaluate(model, a["x_test"], a["y_test"], b.task, b.metric),
        "val_metric": evaluate(model, a["x_val"], a["y_val"], b.task, b.metric),
    }
    write_json(b.run / summary_file, summary)
    b.outcome[name] = summary
    b.ui.log(f"  test {b.metric_name} {before:.4g} -> {summary['test_metric']:.4g}")
    return ["model.pt", summary_file]
