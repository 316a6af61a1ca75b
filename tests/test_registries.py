"""Everything registered works (methods: tests/test_methods_contract.py, run over every registered method):
every built-in model builds for both bundled input sizes, every target loads, every metric
has a unit and ranks outputs."""

import numpy as np
import pytest
import torch

from edgeprune.errors import ConfigError
from edgeprune.metrics import METRICS, get_metric, metric_unit
from edgeprune.models import build_model, list_models, model_task
from edgeprune.surgery import analyze
from edgeprune.targets import list_targets, load_target


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
    b = t.budget  # flops_keep is optional (derived from the budget lines when absent)
    assert b.flops_keep is None and (b.latency_p50_ms or b.peak_memory_mb or b.model_size_mb) or 0 < b.flops_keep <= 1
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
