"""The contract every registered pruning method keeps (used by test_methods_contract.py and the docs' toy method).

timm-style: a method is tested by registering it. On a small digits CNN with the method's own
``quick_options()``, ``fit`` must return a plan that validates, compacts and verifies, keeps MACs
within the budget band, leaves the given model untouched, and a history that serialises to JSON
and whose plot declaration the report can draw.
"""

import json

import torch

from edgeprune.methods import FitContext, get_method, method_info
from edgeprune.report.html import check_plots
from edgeprune.surgery import PruningPlan, analyze, compact_and_verify

FLOPS_KEEP = 0.5
# kept MACs of the compact model / requested: at most 5% over (the prune stage's own tolerance), and not below
# 60% of the request (a method that throws away far more than asked fails the budget's intent)
BAND = (0.6, 1.05)
TRAIN_OPTIONS = {"epochs": 1, "finetune_epochs": 1, "batch_size": 64, "lr": 0.01, "weight_decay": 5e-4, "seed": 0}


def check_method(name: str, model, data: dict, width_multiple: int = 4) -> dict:
    """Run the contract on the registered method ``name``; return what was measured."""
    info = method_info(name)
    assert info["summary"], f"{name}: no summary"
    for o in info["options"]:
        assert o["help"], f"{name}: option {o['name']} has no help text"
    example = torch.zeros(1, *data["x_train"].shape[1:])
    graph = analyze(model, example)
    ctx = FitContext(data["x_train"], data["y_train"], data["x_val"], data["y_val"], example, graph,
                     "classification", flops_keep=FLOPS_KEEP, width_multiple=width_multiple, seed=0,
                     train_options=dict(TRAIN_OPTIONS), log=lambda *a: None)
    cls = type(get_method(name))
    method = get_method(name, cls.quick_options())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = method.fit(model, ctx)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), f"{name} changed the given model"

    plan = result.plan
    plan.validate(graph)
    again = PruningPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.keep == plan.keep and again.dropped == plan.dropped
    small, report = compact_and_verify(result.model, plan, example, torch.from_numpy(data["x_test"][:32]), graph)
    dense = graph.dense_cost()["macs"]
    counted = analyze(small, example, probe=False).dense_cost()["macs"]  # counted on the compact model itself
    assert counted == report["macs"]
    kept = counted / dense
    assert BAND[0] * FLOPS_KEEP <= kept <= BAND[1] * FLOPS_KEEP, f"{name}: keeps {kept:.3f} of MACs, asked {FLOPS_KEEP}"

    text = json.dumps(result.history, allow_nan=False)
    assert isinstance(json.loads(text), dict)
    assert check_plots(result.history) == [], check_plots(result.history)
    assert method.own_epochs(TRAIN_OPTIONS) >= 0
    return {"kept": kept, "verify_rel_diff": report.get("rel_diff"), "history_bytes": len(text)}
