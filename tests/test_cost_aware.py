"""Cost-aware widths: a latency-weighted budget term for pl-gates (per-layer weights on ExpectedCost)."""

import numpy as np
import pytest
import torch

from edgeprune.bench.planning import layer_latency_weights
from edgeprune.data import load_dataset
from edgeprune.methods import FitContext
from edgeprune.methods.gating import ExpectedCost
from edgeprune.methods.pl_gates import PLGates
from edgeprune.models import build_model
from edgeprune.surgery import analyze
from edgeprune.surgery.masking import ChannelMasks
from edgeprune.targets import load_target
from edgeprune.train import seed_everything, train

# κ̂ off (gamma 0): the budget term alone shapes the gates, so the comparison isolates it
FAST = {"kappa_every": 0, "gamma": 0, "eval_samples": 100, "calib_samples": 128, "epochs": 4}


@pytest.fixture(scope="module")
def cnn():
    ds = load_dataset("digits")
    data = {"xtr": ds.normalize(ds.x_train[:512]), "ytr": ds.y_train[:512],
            "xv": ds.normalize(ds.x_val), "yv": ds.y_val}
    seed_everything(0)
    model = build_model("cnn", ds.input_shape, 10)
    train(model, data["xtr"], data["ytr"], epochs=3, lr=0.05, seed=0)
    ex = torch.zeros(1, *ds.input_shape)
    return model, ex, analyze(model, ex), data


def _fit(cnn, weights=None, **opts):
    model, ex, graph, d = cnn
    ctx = FitContext(d["xtr"], d["ytr"], d["xv"], d["yv"], ex, graph, "classification", 0.5, 1, 0,
                     {"epochs": 4, "lr": 0.05, "batch_size": 64, "weight_decay": 5e-4}, log=lambda s: None)
    method = PLGates(**FAST, **opts)
    method.layer_weights = weights
    return method.fit(model, ctx)


def test_expected_cost_weights_scale_each_layer(cnn):
    model, _, graph, _ = cnn
    offsets = ChannelMasks(model, graph).offsets
    n = sum(graph.groups[g].size for g in offsets)
    q = torch.rand(n, generator=torch.Generator().manual_seed(0))
    plain = ExpectedCost(graph, offsets)
    ones = ExpectedCost(graph, offsets, layer_weights={lc: 1.0 for lc in graph.layers})
    assert float(ones(q)) == float(plain(q))  # weights of 1: bit-for-bit the plain expectation
    heavy = ExpectedCost(graph, offsets, layer_weights={"0.0": 10.0})
    full = torch.ones(n)
    conv0 = graph.dense_cost()["macs"] - float(ExpectedCost(graph, offsets, layer_weights={"0.0": 0.0})(full))
    assert conv0 > 0
    assert float(heavy(full)) == pytest.approx(float(plain(full)) + 9 * conv0)


def test_latency_weighted_budget_removes_more_of_the_expensive_layer(cnn):
    plain = _fit(cnn)
    same = _fit(cnn, weights={}, cost="latency")  # every layer weight 1
    assert same.plan.keep == plain.plan.keep
    assert same.history["gate_open_final"] == plain.history["gate_open_final"]
    heavy = _fit(cnn, weights={"0.0": 10.0}, cost="latency")  # conv 0.0 costs 10x per MAC
    g_plain = np.mean(plain.history["gate_open_final"]["0.0"])
    g_heavy = np.mean(heavy.history["gate_open_final"]["0.0"])
    assert g_heavy < g_plain - 0.02, (g_heavy, g_plain)  # the term closes more of that layer's channels
    assert len(heavy.plan.keep["0.0"]) < len(plain.plan.keep["0.0"])  # and the plan removes a larger share
    # the final plan still meets the MACs budget (exact MACs, not the weighted cost)
    assert heavy.history["budget"]["within_tol"] and plain.history["budget"]["within_tol"]


def test_cost_model_weights_map_every_layer(cnn):
    model, ex, graph, _ = cnn
    names = [lc.name for lc in graph.layers.values() if lc.kind != "norm"]
    w, info = layer_latency_weights(model, ex, load_target("rpi4"), names)
    assert info["unmapped"] == [] and set(w) == set(names)
    assert all(v > 0 for v in w.values())
    macs = {lc.name: lc.out_full * lc.in_full * lc.kernel * lc.spatial / lc.groups
            for lc in graph.layers.values() if lc.kind in ("conv", "linear")}
    mean = sum(w[n] * macs[n] for n in macs) / sum(macs.values())
    assert mean == pytest.approx(1.0, rel=1e-6)  # normalised: the weighted dense cost is the dense MACs
    assert len({round(v, 6) for v in w.values()}) > 1  # the target does not cost every layer alike
    r = _fit(cnn, cost="latency", latency_target="rpi4")  # end to end: weights from the cost model
    assert r.history["cost"]["kind"] == "latency" and r.history["cost"]["unmapped"] == []
    assert r.history["budget"]["within_tol"]


def test_onnx_scopes_name_the_torch_module():
    from edgeprune.bench.planning import _module_of_node

    assert _module_of_node(["1", "branch", "branch.0", "branch.0.0"]) == "1.branch.0.0"  # residual block
    assert _module_of_node(["3", "3.0", "3.0.0"]) == "3.0.0"  # nested Sequential
    assert _module_of_node(["0", "0.0"]) == "0.0"
    assert _module_of_node(["features", "conv"]) == "features.conv"
