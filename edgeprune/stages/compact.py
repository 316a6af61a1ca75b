"""Stage 3: structural surgery; the compact model is verified against the masked model."""

from __future__ import annotations

import torch

from ..models import example_for
from ..runfolder import write_json
from ..surgery import PruningPlan, analyze, compact_and_verify, save_compact
from ..train import evaluate
from .common import load_model

name = "compact"
summary_file = "compact.json"
N_VERIFY = 256  # real test inputs compared between masked and compact model


def depends(b):
    return []


def describe(b):
    return "remove pruned channels and branches, verify against the masked model"


def run(b) -> list[str]:
    model, _, arch = load_model(b, "pruned.pt")
    plan = PruningPlan.load(b.run / "plan.json")
    example = example_for(arch)
    graph = analyze(model, example)
    a = b.arrays
    inputs = torch.from_numpy(a["x_test"][:N_VERIFY])
    small, report = compact_and_verify(model, plan, example, inputs, graph)
    save_compact(b.run / "compact.pt", arch, plan, small)
    summary = {
        "verification": {k: report[k] for k in ("max_abs_diff", "rel_diff", "rel_tol", "n_inputs")},
        "params": report["params"],
        "macs": report["macs"],
        "dense": report["dense"],
        "macs_ratio": report["macs"] / report["dense"]["macs"] if report["dense"]["macs"] else 1.0,
        "params_ratio": report["params"] / report["dense"]["params"],
        "test_metric_before_finetune": evaluate(small, a["x_test"], a["y_test"], b.task, b.metric),
    }
    write_json(b.run / summary_file, summary)
    b.outcome[name] = summary
    b.ui.log(f"  verified: rel diff {report['rel_diff']:.1e} on {report['n_inputs']} test inputs; "
             f"{summary['params_ratio']:.1%} params, {summary['macs_ratio']:.1%} MACs kept")
    return ["compact.pt", summary_file]
