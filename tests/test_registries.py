"""Everything registered works: every method yields a valid plan that the surgery accepts,
every built-in model builds for both bundled input sizes, every target loads."""

import pytest
import torch

from edgeprune.data import load_dataset
from edgeprune.methods import FitContext, get_method, list_methods
from edgeprune.models import build_model, list_models, model_task
from edgeprune.surgery import analyze, compact_and_verify
from edgeprune.targets import list_targets, load_target
from edgeprune.train import train


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits", limit=600)
    return {k: ds.normalize(getattr(ds, k)) if k.startswith("x") else getattr(ds, k)
            for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}


@pytest.fixture(scope="module")
def trained_cnn(digits):
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, widths=(16, 32), hidden=32)
    train(model, digits["x_train"], digits["y_train"], epochs=2)
    return model


@pytest.mark.parametrize("method", list_methods())
def test_every_method_gives_a_plan_the_surgery_accepts(method, digits, trained_cnn):
    example = torch.zeros(1, 1, 8, 8)
    graph = analyze(trained_cnn, example)
    ctx = FitContext(digits["x_train"], digits["y_train"], digits["x_val"], digits["y_val"], example, graph,
                     "classification", flops_keep=0.5, width_multiple=4, seed=0,
                     train_options={"epochs": 1, "batch_size": 64, "lr": 0.01, "weight_decay": 5e-4, "seed": 0},
                     log=lambda *a: None)
    result = get_method(method).fit(trained_cnn, ctx)
    small, report = compact_and_verify(result.model, result.plan, example, torch.from_numpy(digits["x_test"][:32]), graph)
    assert report["macs"] <= 0.5 * graph.dense_cost()["macs"] * 1.05
    assert report["params"] < graph.dense_cost()["params"]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_every_model_builds_and_has_prunable_groups(name, shape):
    model = build_model(name, shape, 10)
    out = model(torch.zeros(2, *shape))
    if model_task(name) == "reconstruction":
        assert out.shape == (2, *shape)
    else:
        assert out.shape == (2, 10)
    assert analyze(model, torch.zeros(1, *shape)).groups


@pytest.mark.parametrize("name", list_targets())
def test_every_target_has_a_budget_and_sources(name):
    t = load_target(name)
    assert t.budget.flops_keep and 0 < t.budget.flops_keep <= 1
    assert all(f.source for f in t.device.values())
