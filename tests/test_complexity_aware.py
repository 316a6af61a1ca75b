"""complexity-aware: exact expected complexity, λ = 0 removes nothing, structures removed for good, 0/1 end
state, plans that compact and meet the budget, option validation."""

import json

import numpy as np
import pytest
import torch

from edgeprune.data import load_dataset
from edgeprune.errors import ConfigError
from edgeprune.methods import FitContext, get_method
from edgeprune.methods.complexity_aware import BernoulliNetwork, ExpectedComplexity
from edgeprune.models import build_model
from edgeprune.surgery import analyze, compact_and_verify
from edgeprune.surgery.masking import ChannelMasks
from edgeprune.train import seed_everything


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return {"shape": ds.input_shape, "xtr": ds.normalize(ds.x_train[:512]), "ytr": ds.y_train[:512],
            "xv": ds.normalize(ds.x_val[:200]), "yv": ds.y_val[:200], "xte": ds.normalize(ds.x_test[:64])}


def _ctx(model, data, flops_keep=0.5, epochs=1, width_multiple=1):
    ex = torch.zeros(1, *data["shape"])
    return FitContext(data["xtr"], data["ytr"], data["xv"], data["yv"], ex, analyze(model, ex), "classification",
                      flops_keep, width_multiple, 0, {"epochs": epochs, "lr": 0.05, "batch_size": 64,
                                                      "weight_decay": 5e-4}, log=lambda s: None)


@pytest.mark.parametrize("name", ["resnet", "mobilenetv2", "concat"])
def test_expected_complexity_is_exact(name):
    """0/1 probabilities give the cost table's exact figure; random ones the mean over sampled networks."""
    seed_everything(0)
    model = build_model(name, (1, 8, 8), 10)
    graph = analyze(model, torch.zeros(1, 1, 8, 8))
    masks = ChannelMasks(model, graph)
    branches = list(graph.branches)
    cost = ExpectedComplexity(graph, masks.offsets, branches)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):  # deterministic networks
        z = (torch.rand(masks.n, generator=g) < 0.6).float()
        zb = (torch.rand(len(branches), generator=g) < 0.5).float()
        keep = {k: set(np.flatnonzero(v.numpy()).tolist()) for k, v in masks.split(z).items()}
        dropped = [b for b, s in zip(branches, zb.tolist()) if s == 0]
        p, m = cost(z, zb)
        exact = graph.cost_of_sets(keep, dropped)
        assert int(round(float(p))) == exact["params"] and int(round(float(m))) == exact["macs"]
    # E[cost] under random probabilities = the mean cost of sampled deterministic networks
    q = torch.rand(masks.n, generator=g) * 0.8 + 0.1
    qb = torch.rand(len(branches), generator=g) * 0.8 + 0.1
    p_exp, m_exp = (float(t) for t in cost(q, qb))
    samples = []
    for _ in range(1500):
        z = torch.bernoulli(q, generator=g)
        zb = torch.bernoulli(qb, generator=g)
        keep = {k: set(np.flatnonzero(v.numpy()).tolist()) for k, v in masks.split(z).items()}
        c = graph.cost_of_sets(keep, [b for b, s in zip(branches, zb.tolist()) if s == 0])
        samples.append((c["params"], c["macs"]))
    arr = np.asarray(samples, dtype=np.float64)
    se = arr.std(0) / np.sqrt(len(arr))
    assert abs(arr[:, 0].mean() - p_exp) < 4 * se[0] + 1e-9
    assert abs(arr[:, 1].mean() - m_exp) < 4 * se[1] + 1e-9


def test_lambda_zero_removes_nothing(digits):
    seed_everything(0)
    model = build_model("resnet", digits["shape"], 10)
    ctx = _ctx(model, digits, flops_keep=0.3)
    res = get_method("complexity-aware", {"lam": 0.0, "epochs": 1, "eval_samples": 0, "calib_samples": 128}).fit(model, ctx)
    assert res.plan.keep == {} and res.plan.dropped == []
    assert res.history["units_removed_in_training"] == 0 and res.history["branches_removed_in_training"] == 0
    assert res.history["plan_macs_kept"] == 1.0


def test_removed_structures_never_come_back_and_pi_ends_binary(digits):
    seed_everything(0)
    model = build_model("resnet", digits["shape"], 10)
    ctx = _ctx(model, digits, epochs=2)
    # a strong fixed λ and a short patience: structures are removed during training
    opts = {"lam": 60.0, "epochs": 2, "pi_lr": 0.5, "patience": 3, "pi_min": 0.2, "eval_samples": 0, "calib_samples": 128}
    res = get_method("complexity-aware", opts).fit(model, ctx)
    h = res.history
    assert h["units_removed_in_training"] + h["branches_removed_in_training"] > 0
    assert all(a >= b for a, b in zip(h["alive_units"], h["alive_units"][1:]))  # never revived
    assert all(a >= b for a, b in zip(h["alive_branches"], h["alive_branches"][1:]))
    assert h["removed_in_training_but_kept"] == 0
    finals = [v for vs in h["pi_final"].values() for v in vs] + list(h["branch_pi_final"].values())
    assert set(finals) <= {0.0, 1.0}
    # the end state is the plan
    for g, vs in h["pi_final"].items():
        kept = set(res.plan.keep.get(g, range(len(vs))))
        assert kept == {i for i, v in enumerate(vs) if v == 1.0}
    assert sorted(res.plan.dropped) == sorted(b for b, v in h["branch_pi_final"].items() if v == 0.0)
    json.dumps(h)


@pytest.mark.parametrize("opts", [{}, {"branches": False}, {"units": False}])
def test_budget_mode_plan_compacts_and_meets_budget(digits, opts):
    seed_everything(0)
    model = build_model("resnet", digits["shape"], 10)
    ctx = _ctx(model, digits, flops_keep=0.5)
    res = get_method("complexity-aware", {"epochs": 1, "eval_samples": 0, "calib_samples": 128, **opts}).fit(model, ctx)
    ex = torch.zeros(1, *digits["shape"])
    small, rep = compact_and_verify(res.model, res.plan, ex, torch.from_numpy(digits["xte"]), ctx.graph)
    kept = rep["macs"] / rep["dense"]["macs"]
    if opts.get("units") is False:
        assert res.plan.keep == {}  # branch-only: whole branches, no unit removed
        assert kept <= 0.5 and res.plan.dropped
    else:
        assert abs(kept - 0.5) <= 0.05
    if opts.get("branches") is False:
        assert res.plan.dropped == []


def test_bernoulli_network_samples_and_is_deterministic_in_eval(digits):
    model = build_model("cnn", digits["shape"], 10)
    graph = analyze(model, torch.zeros(1, *digits["shape"]))
    net = BernoulliNetwork(model, graph, units=True, branches=True, pi_init=0.5)
    x = torch.from_numpy(digits["xte"][:8])
    z, _ = net.sample(torch.Generator().manual_seed(0))
    assert set(z.detach().unique().tolist()) <= {0.0, 1.0} and 0 < float(z.detach().sum()) < net.masks.n
    z.sum().backward()  # straight-through: the gradient reaches π
    assert net.pi.grad is not None and torch.allclose(net.pi.grad, torch.ones_like(net.pi))
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("bad", [{"alpha": 1.5}, {"beta": -0.1}, {"lam": -1}, {"units": False, "branches": False},
                                 {"patience": 2.5}, {"nonsense": 1}])
def test_options_validated(bad):
    with pytest.raises(ConfigError):
        get_method("complexity-aware", bad)
