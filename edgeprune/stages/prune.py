"""Stage 2: run the pruning method; it yields a PruningPlan (and the weights it applies to)."""

from __future__ import annotations

import time

from ..methods import FitContext, get_method
from ..models import example_for
from ..runfolder import write_json
from ..surgery import analyze, save_compact
from .common import load_model, train_options

name = "prune"
summary_file = "prune.json"


def depends(b):
    # a method that trains may take its epochs from the run's (FitContext.train_options), including
    # finetune_epochs when train.epochs is 0 (pretrained --weights)
    return [b.cfg["method"]["name"], b.cfg["method_options"], b.flops_keep, b.width_multiple,
            b.cfg["train"]["epochs"], b.cfg["train"]["finetune_epochs"]]


def describe(b):
    return f"{b.cfg['method']['name']}: keep {b.flops_keep:.0%} of MACs, widths rounded to {b.width_multiple}"


def run(b) -> list[str]:
    method = get_method(b.cfg["method"]["name"], b.cfg["method_options"])
    model, _, arch = load_model(b, "dense.pt")
    example = example_for(arch)
    graph = analyze(model, example)
    a = b.arrays
    ctx = FitContext(
        a["x_train"], a["y_train"], a["x_val"], a["y_val"], example, graph, b.task, b.flops_keep, b.width_multiple,
        b.cfg["seed"], dict(train_options(b), epochs=b.cfg["train"]["epochs"],
                            finetune_epochs=b.cfg["train"]["finetune_epochs"]),
        progress=b.ui.progress, log=b.ui.log, metric=b.metric, target=b.target,
    )
    t0 = time.perf_counter()
    result = method.fit(model, ctx)
    seconds = time.perf_counter() - t0
    plan = result.plan
    plan.method = method.name
    plan, ranks = _agree(plan)
    predicted = plan.predicted_cost(graph)
    dense = graph.dense_cost()
    plan.save(b.run / "plan.json")
    save_compact(b.run / "pruned.pt", arch, type(plan)(method="unpruned-weights"), result.model)
    summary = {
        "method": method.name,
        "summary": method.summary,
        "options": method.options,
        "flops_keep_requested": b.flops_keep,
        "width_multiple": b.width_multiple,
        "predicted": predicted,
        "dense": dense,
        "macs_kept": predicted["macs"] / dense["macs"] if dense["macs"] else 1.0,
        "dropped_branches": plan.dropped,
        "widths": {g: [grp.size, len(plan.keep.get(g, range(grp.size)))] for g, grp in graph.groups.items()},
        "history": result.history,
        "seconds": seconds,
        **ranks,
    }
    if summary["macs_kept"] > b.flops_keep + 0.05:
        b.ui.warn(f"the plan keeps {summary['macs_kept']:.0%} of MACs (asked {b.flops_keep:.0%}): width rounding "
                  "or minimum widths prevent more pruning")
    if ranks and not ranks["distributed"]["ranks_agreed"]:
        b.ui.warn("the ranks' own plans differ (an estimate from rank-local data): every rank uses rank 0's plan")
    write_json(b.run / summary_file, summary)
    b.outcome[name] = summary
    b.ui.log(f"  plan keeps {summary['macs_kept']:.1%} of MACs, {predicted['params']:,} params; "
             f"{len(plan.dropped)} residual branch(es) dropped")
    return ["plan.json", "pruned.pt", summary_file]


def _agree(plan):
    """Under torchrun: rank 0's plan on every rank (so every rank compacts the same model), and the
    sha256 of each rank's own plan before that, recorded: equal digests show the ranks' training agreed."""
    from .. import distributed as D

    if not D.is_distributed():
        return plan, {}
    import hashlib
    import json

    own = hashlib.sha256(json.dumps(plan.to_dict(), sort_keys=True).encode()).hexdigest()
    digests = D.all_gather_object(own)
    return D.broadcast_object(plan), {"distributed": {"world_size": D.world_size(), "plan_sha256_per_rank": digests,
                                                      "ranks_agreed": len(set(digests)) == 1}}
