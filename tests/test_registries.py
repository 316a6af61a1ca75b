"""Everything registered works: every method yields a valid plan that the surgery accepts,
every built-in model builds for both bundled input sizes, every target loads, every metric
has a unit and ranks outputs."""

import numpy as np
import pytest
import torch

from edgeprune.data import load_dataset
from edgeprune.errors import ConfigError
from edgeprune.metrics import METRICS, get_metric, metric_unit
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


@pytest.mark.parametrize("name", sorted(n for n in METRICS if ":" not in n))
def test_every_metric_has_a_unit_and_scores_a_perfect_output_higher(name):
    rng = np.random.default_rng(0)
    fn = get_metric(name)
    assert metric_unit(name) in ("%", "dB")
    if name == "accuracy":
        y = rng.integers(0, 10, 50)
        perfect, noisy = np.eye(10)[y], rng.random((50, 10))
    else:
        y = rng.random((50, 1, 8, 8))
        perfect, noisy = y + 1e-3 * rng.standard_normal(y.shape), rng.random(y.shape)
    assert fn(perfect, y) > fn(noisy, y)


def test_an_in_process_metric_from_another_process_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"in-process metric \(gone, passed to the Python API\).*--metric file.py:function"):
        get_metric("api:gone")
