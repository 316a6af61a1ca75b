"""Torch-Pruning's criteria as registered methods: each returns a plan on edgeprune's graph that hits the
MACs budget, compacts and verifies, and keeps exactly the channels Torch-Pruning's own pruner keeps."""

import copy
import json
import warnings

import pytest
import torch

from edgeprune.data import load_dataset
from edgeprune.errors import ConfigError
from edgeprune.methods import METHODS, FitContext, get_method
from edgeprune.models import build_model
from edgeprune.surgery import analyze, compact_and_verify
from edgeprune.train import train

TP = ["tp-l1", "tp-l2", "tp-taylor", "tp-groupnorm", "tp-random"]


@pytest.fixture(scope="module")
def digits_resnet():
    ds = load_dataset("digits", seed=0)
    x, xv = ds.normalize(ds.x_train), ds.normalize(ds.x_val)
    torch.manual_seed(0)
    model = build_model("resnet", ds.input_shape, ds.num_classes)
    train(model, x[:600], ds.y_train[:600], epochs=1, seed=0)
    example = torch.zeros(1, *ds.input_shape)
    return ds, x, xv, model.eval(), example, analyze(model, example)


def _ctx(digits_resnet, keep=0.5, wm=1):
    ds, x, xv, _, example, graph = digits_resnet
    return FitContext(x, ds.y_train, xv, ds.y_val, example, graph, "classification", keep, wm, 0,
                      {"epochs": 1, "lr": 0.01, "batch_size": 64, "weight_decay": 5e-4}, log=lambda s: None)


def test_every_tp_method_is_registered_with_options():
    assert set(TP) <= set(METHODS)
    for name in TP:
        cls = METHODS[name]
        assert cls.summary and cls.family == "torch-pruning"
        get_method(name, cls.quick_options())  # the contract test's options are accepted


@pytest.mark.parametrize("name", TP)
def test_tp_plan_hits_budget_compacts_and_verifies(digits_resnet, name):
    ds, x, xv, model, example, graph = digits_resnet
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method = get_method(name, METHODS[name].quick_options())
    ctx = _ctx(digits_resnet, keep=0.5)
    res = method.fit(model, ctx)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the given model is untouched
    res.plan.validate(graph)
    kept = res.plan.predicted_cost(graph)["macs"] / graph.dense_cost()["macs"]
    assert 0.45 <= kept <= 0.5, kept  # within the band the pipeline accepts, never above the budget
    assert res.plan.keep and all(len(v) < graph.groups[g].size for g, v in res.plan.keep.items())
    small, report = compact_and_verify(res.model, res.plan, example, torch.from_numpy(xv[:64]), graph)
    assert report["rel_diff"] < 1e-4
    assert sum(p.numel() for p in small.parameters()) == res.plan.predicted_cost(graph)["params"]
    json.dumps(res.history)  # the report stores it
    assert method.own_epochs(ctx.train_options) == (1 if name == "tp-groupnorm" else 0)
    if name == "tp-groupnorm":  # pretrained weights, no dense training: it still trains for sparsity
        assert get_method(name).own_epochs({"epochs": 0, "finetune_epochs": 3}) == 3


def test_tp_l1_keeps_what_torch_prunings_own_pruner_keeps(digits_resnet):
    """The translation is exact: the compact model equals TP's own pruned copy at the same ratio, tensor for tensor."""
    import torch_pruning as tp

    ds, x, xv, model, example, graph = digits_resnet
    res = get_method("tp-l1").fit(model, _ctx(digits_resnet, keep=0.3, wm=4))
    assert all(len(v) % 4 == 0 for v in res.plan.keep.values())
    small, _ = compact_and_verify(res.model, res.plan, example, torch.from_numpy(xv[:64]), graph)
    ref = copy.deepcopy(model).eval()
    mods = dict(ref.named_modules())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp.pruner.MetaPruner(ref, example, importance=tp.importance.MagnitudeImportance(p=1),
                             pruning_ratio=res.plan.meta["pruning_ratio"], global_pruning=False, round_to=4,
                             ignored_layers=[mods[n] for n in graph.ignored]).step()
    got, want = small.state_dict(), ref.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].shape == want[k].shape and torch.allclose(got[k].float(), want[k].float()), k


def test_bad_options_and_impossible_budgets_are_config_errors(digits_resnet):
    with pytest.raises(ConfigError, match="no option"):
        get_method("tp-l1", {"p": 1})
    with pytest.raises(ConfigError, match="samples"):
        get_method("tp-taylor", {"samples": 0})
    with pytest.raises(ConfigError, match="reg"):
        get_method("tp-groupnorm", {"reg": -1})
    # every group keeps at least one multiple of 8: 5% of the MACs is out of reach
    with pytest.raises(ConfigError, match="budget"):
        get_method("tp-l2").fit(digits_resnet[3], _ctx(digits_resnet, keep=0.05, wm=8))


from .test_surgery import _CatResidual  # noqa: E402  (relu(cat(a(x), b(x)) + x): one group owned in parts)


def test_groups_torch_pruning_does_not_map_are_refused_in_one_line():
    from edgeprune.errors import UnsupportedModelError
    from edgeprune.models import conv_bn

    torch.manual_seed(0)
    model = torch.nn.Sequential(conv_bn(1, 8), _CatResidual(8), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(8, 10)).eval()
    example = torch.zeros(1, 1, 8, 8)
    graph = analyze(model, example)
    x = torch.randn(16, 1, 8, 8).numpy()
    y = torch.zeros(16, dtype=torch.long).numpy()
    ctx = FitContext(x, y, x, y, example, graph, "classification", 0.5, 1, 0, {"epochs": 1}, log=lambda s: None)
    with pytest.raises(UnsupportedModelError, match="removes no channel of edgeprune's group") as e:
        get_method("tp-l1").fit(model, ctx)
    assert "\n" not in str(e.value) and "0.0" in str(e.value)
