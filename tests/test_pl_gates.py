"""pl-gates: masking equals removal, exact expected MACs, κ̂ against brute force, plans that compact, budgets met."""

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.data import load_dataset
from edgeprune.errors import ConfigError
from edgeprune.methods import FitContext, get_method, list_methods
from edgeprune.methods.gating import ExpectedCost, hc_deterministic, hc_prob_open, hc_sample, widths_to_budget
from edgeprune.methods.pl_gates import GatedNetwork, PLGates
from edgeprune.models import build_model
from edgeprune.surgery import PruningPlan, analyze, compact, compact_and_verify, masked
from edgeprune.surgery.masking import ChannelMasks
from edgeprune.train import evaluate, seed_everything, train

MODELS = [("mlp", (1, 8, 8)), ("cnn", (1, 8, 8)), ("resnet", (1, 8, 8)), ("mobilenetv2", (1, 8, 8)),
          ("concat", (1, 8, 8)), ("autoencoder", (1, 8, 8)), ("conv1d", (1, 8, 8))]
# tiny, fast settings for every fit in this file
FAST = {"kappa_every": 4, "kappa_batch": 4, "eval_samples": 100, "calib_samples": 128}


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return {
        "shape": ds.input_shape,
        "xtr": ds.normalize(ds.x_train[:512]), "ytr": ds.y_train[:512],
        "xv": ds.normalize(ds.x_val), "yv": ds.y_val,
        "xte": ds.normalize(ds.x_test), "yte": ds.y_test,
    }


def _ctx(model, data, flops_keep=0.5, width_multiple=1, epochs=1):
    ex = torch.zeros(1, *data["shape"])
    graph = analyze(model, ex)
    return FitContext(data["xtr"], data["ytr"], data["xv"], data["yv"], ex, graph, "classification", flops_keep,
                      width_multiple, 0, {"epochs": epochs, "lr": 0.05, "batch_size": 64, "weight_decay": 5e-4},
                      log=lambda s: None)


@pytest.fixture(scope="module")
def trained(digits):
    """Dense mlp and cnn trained briefly on real digits (what the pipeline hands a method)."""
    out = {}
    for name in ("mlp", "cnn"):
        seed_everything(0)
        m = build_model(name, digits["shape"], 10)
        train(m, digits["xtr"], digits["ytr"], epochs=3, lr=0.05, seed=0)
        out[name] = m
    return out


def _randomize_bn(model):
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))


# ------------------------------------------------------------------ masking and cost


@pytest.mark.parametrize("name,shape", MODELS)
def test_gate_zero_is_exactly_channel_removal(name, shape):
    """0/1 gates at the consumers compute exactly edgeprune's masked reference and the compact model."""
    torch.manual_seed(0)
    model = build_model(name, shape, 10).eval()
    _randomize_bn(model)  # non-trivial BN bias: a removed channel must not leak its bias
    ex = torch.zeros(1, *shape)
    graph = analyze(model, ex)
    cm = ChannelMasks(model, graph)
    z = (torch.rand(cm.n) > 0.4).float()
    for g in cm.groups:
        z[cm.offsets[g]] = 1.0  # keep at least one channel per group
    plan = PruningPlan(keep={g: [i for i, v in enumerate(zz.tolist()) if v] for g, zz in cm.split(z).items()})
    x = torch.randn(8, *shape)
    net = GatedNetwork(model, graph, branches=False, gate_init=3.0, temperature=2 / 3)
    ref_model, small_model = masked(model, plan, ex, graph), compact(model, plan, ex, graph)
    with torch.no_grad():
        gated = net.run(x, z, torch.zeros(0))
        ref, small = ref_model(x), small_model(x)
    net.close()
    assert torch.equal(gated, ref)
    assert torch.allclose(gated, small, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("name,shape", MODELS)
def test_expected_macs_equals_cost_table(name, shape):
    model = build_model(name, shape, 10)
    graph = analyze(model, torch.zeros(1, *shape))
    cm = ChannelMasks(model, graph)
    branches = list(graph.branches)
    cost = ExpectedCost(graph, cm.offsets, branches)
    gen = torch.Generator().manual_seed(1)
    assert float(cost(torch.ones(cm.n), torch.ones(len(branches)))) == graph.dense_cost()["macs"]
    for _ in range(3):
        q = (torch.rand(cm.n, generator=gen) > 0.5).float()
        qb = (torch.rand(len(branches), generator=gen) > 0.5).float()
        keep = {g: {i for i, v in enumerate(zz.tolist()) if v} for g, zz in cm.split(q).items()}
        dropped = [b for b, v in zip(branches, qb.tolist()) if not v]
        assert float(cost(q, qb)) == graph.cost_of_sets(keep, dropped)["macs"]
    # fractional probabilities: the expectation of the cost over independent Bernoulli gates
    p = torch.rand(cm.n, generator=gen)
    pb = torch.rand(len(branches), generator=gen)
    samples = []
    for _ in range(400):
        q = (torch.rand(cm.n, generator=gen) < p).float()
        qb = (torch.rand(len(branches), generator=gen) < pb).float()
        samples.append(float(cost(q, qb)))
    assert abs(np.mean(samples) - float(cost(p, pb))) < 4 * np.std(samples) / np.sqrt(len(samples)) + 1e-6


def test_hard_concrete_gates():
    la = torch.tensor([-6.0, 0.0, 6.0])
    det = hc_deterministic(la)
    assert det[0] == 0.0 and det[2] == 1.0 and 0 < det[1] < 1
    q = hc_prob_open(la, 2 / 3)
    z = torch.stack([hc_sample(la, 2 / 3, torch.Generator().manual_seed(i)) for i in range(4000)])
    assert ((z >= 0) & (z <= 1)).all()
    assert torch.allclose((z > 0).float().mean(0), q, atol=0.03)  # P(gate != 0) as computed


# ------------------------------------------------------------------ κ̂


def test_kappa_matches_brute_force_on_masked_mlp():
    """Estimator vs a full Jacobian (torch.autograd.functional.jacobian) + numpy eigenvalues, fractional gates."""
    torch.manual_seed(0)
    model = build_model("mlp", (1, 2, 2), 3, hidden=(6, 5)).double().eval()
    graph = analyze(model.float(), torch.zeros(1, 1, 2, 2))
    model = model.double()
    net = GatedNetwork(model, graph, branches=False, gate_init=3.0, temperature=2 / 3)
    cm = net.masks
    z = torch.tensor([1.0, 0.0, 0.3, 0.9, 1.0, 0.6, 0.0, 1.0, 0.5, 0.8, 1.0], dtype=torch.float64)
    assert cm.n == len(z) and cm.groups == ["1", "3"]
    xs = torch.randn(4, 1, 2, 2, dtype=torch.float64)
    est = net.kappa(xs, z, torch.zeros(0, dtype=torch.float64), None)

    # brute force, written independently of ChannelMasks: h1 = relu(W1 x + b1),
    # h2 = relu((W3 * z1) h1 + b3), y = (W5 * z3) h2 + b5
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])
    z1, z3 = z[:6], z[6:]

    def outputs(t):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            parts[n] = t[i : i + k].reshape(s)
            i += k
        x = xs.reshape(4, -1)
        h1 = torch.relu(x @ parts["1.weight"].T + parts["1.bias"])
        h2 = torch.relu(h1 @ (parts["3.weight"] * z1).T + parts["3.bias"])
        return (h2 @ (parts["5.weight"] * z3).T + parts["5.bias"]).reshape(-1)

    jac = torch.autograd.functional.jacobian(outputs, theta).numpy()
    ev = np.linalg.eigvalsh(jac @ jac.T)
    kappa = ev[-1] / ev[0]  # scale-free: λ_max / λ_min
    assert est.rows == 12
    assert est.lam_min == pytest.approx(ev[0], rel=1e-8)
    assert est.lam_max == pytest.approx(ev[-1], rel=1e-8)
    assert float(est.kappa) == pytest.approx(kappa, rel=1e-8)
    net.close()


def test_kappa_with_binary_gates_is_the_compact_networks_kappa():
    """cnn with BN and flatten -> linear: 0/1 gates give the tangent kernel of the compact model itself."""
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, widths=(6, 8), hidden=12).eval()
    _randomize_bn(model)
    ex = torch.zeros(1, 1, 8, 8)
    graph = analyze(model, ex)
    model = model.double()
    net = GatedNetwork(model, graph, branches=False, gate_init=3.0, temperature=2 / 3)
    z = (torch.rand(net.masks.n) > 0.35).double()
    for g in net.masks.groups:
        z[net.masks.offsets[g]] = 1.0
    xs = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    est = net.kappa(xs, z, torch.zeros(0, dtype=torch.float64), None)
    net.close()

    plan = PruningPlan(keep={g: [i for i, v in enumerate(zz.tolist()) if v] for g, zz in net.masks.split(z).items()})
    small = compact(model.float(), plan, ex, graph).double().eval()
    params = dict(small.named_parameters())
    names = list(params)
    theta = torch.cat([p.detach().reshape(-1) for p in params.values()])

    def outputs(t):
        parts, i = {}, 0
        for n in names:
            k = params[n].numel()
            parts[n] = t[i : i + k].reshape(params[n].shape)
            i += k
        return torch.func.functional_call(small, parts, (xs,)).reshape(-1)

    jac = torch.autograd.functional.jacobian(outputs, theta).numpy()
    ev = np.linalg.eigvalsh(jac @ jac.T)
    assert est.lam_min == pytest.approx(ev[0], rel=1e-7)
    assert float(est.kappa) == pytest.approx(ev[-1] / ev[0], rel=1e-7)


def test_kappa_gradient_reaches_the_gates(trained, digits):
    model = copy.deepcopy(trained["cnn"]).eval()
    graph = analyze(model, torch.zeros(1, *digits["shape"]))
    net = GatedNetwork(model, graph, branches=False, gate_init=1.0, temperature=2 / 3)
    z, zb = net.sample(torch.Generator().manual_seed(0))
    est = net.kappa(torch.from_numpy(digits["xtr"][:6]), z, zb, None)
    torch.log(est.kappa).backward()
    g = net.log_alpha.grad
    assert g is not None and torch.isfinite(g).all() and float(g.abs().sum()) > 0
    assert all(p.grad is None for p in model.parameters())  # the κ̂ term trains the gates only
    net.close()


# ------------------------------------------------------------------ the method


def test_registered_and_options_validated():
    assert "pl-gates" in list_methods()
    with pytest.raises(ConfigError, match="no option"):
        get_method("pl-gates", {"gama": 0.1})
    with pytest.raises(ConfigError, match="gamma"):
        get_method("pl-gates", {"gamma": -1})
    with pytest.raises(ConfigError, match="kappa_loss"):
        get_method("pl-gates", {"kappa_loss": "square"})
    with pytest.raises(ConfigError, match="branches"):
        get_method("pl-gates", {"branches": "yes"})
    m = get_method("pl-gates", {"gamma": 0, "epochs": 2, "warmup": 0.2})
    assert isinstance(m, PLGates) and m.options["gamma"] == 0.0 and m.options["epochs"] == 2


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_fit_gives_a_plan_that_compacts_and_meets_the_budget(trained, digits, name):
    model = trained[name]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = _ctx(model, digits, flops_keep=0.5, epochs=2)
    res = get_method("pl-gates", FAST).fit(model, ctx)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input model untouched
    ex = ctx.example
    small, report = compact_and_verify(res.model, res.plan, ex, torch.from_numpy(digits["xte"][:64]), ctx.graph)
    dense = ctx.graph.dense_cost()["macs"]
    kept = res.plan.predicted_cost(ctx.graph)["macs"] / dense
    assert abs(kept - 0.5) <= 0.05 * 0.5, kept
    assert report["macs"] / dense == pytest.approx(kept)
    # the static network is a working classifier, and the plan follows the gates
    assert evaluate(small, digits["xte"], digits["yte"], "classification") > 50.0
    h = res.history
    json.dumps(h)
    assert len(h["kappa"]) >= 2 and all(np.isfinite(h["kappa"]))
    assert h["kappa_in_loss"] is True and h["kappa_seconds_total"] > 0
    assert len(h["epochs"]) == 2 and set(h["gate_open_rate"]) == set(ctx.graph.groups)
    assert h["expected_macs"][-1] < h["expected_macs"][0] - 0.1  # the gates closed towards the budget
    assert h["static_val_metric"] == pytest.approx(evaluate(small, digits["xv"][:100], digits["yv"][:100], "classification"))


@pytest.mark.parametrize("flops_keep", [0.5, 0.25])
def test_budget_fit_within_five_percent(flops_keep):
    """The static plan step alone: random scores on the resnet graph, widths to the exact MACs budget."""
    model = build_model("resnet", (1, 28, 28), 10)
    graph = analyze(model, torch.zeros(1, 1, 28, 28))
    rng = np.random.default_rng(0)
    scores = {g: rng.normal(size=grp.size) for g, grp in graph.groups.items()}
    for multiple, dropped in ((1, []), (1, ["2"]), (4, []), (8, [])):
        widths, info = widths_to_budget(graph, scores, flops_keep, multiple, dropped)
        macs = graph.cost(widths, dropped)["macs"]
        assert info["macs"] == macs
        assert abs(macs / (flops_keep * graph.dense_cost()["macs"]) - 1) <= 0.05, (multiple, dropped, info)
        assert all(w == grp.size or w % multiple == 0 for w, grp in zip(widths.values(), graph.groups.values()))


def test_width_multiple_is_respected(trained, digits):
    """Coarse multiples (16, like the host target) still land within 5% of the budget (regression: a greedy
    fill alone stopped at 45% for 50% asked)."""
    ctx = _ctx(trained["cnn"], digits, flops_keep=0.5, width_multiple=16, epochs=1)
    res = get_method("pl-gates", dict(FAST, kappa_every=0)).fit(trained["cnn"], ctx)
    for g, idx in res.plan.keep.items():
        assert len(idx) % 16 == 0 or len(idx) == ctx.graph.groups[g].size
    kept = res.plan.predicted_cost(ctx.graph)["macs"] / ctx.graph.dense_cost()["macs"]
    assert abs(kept / 0.5 - 1) <= 0.05, kept
    compact_and_verify(res.model, res.plan, ctx.example, torch.from_numpy(digits["xte"][:32]), ctx.graph)
    assert res.history["budget"]["within_tol"]


def test_gamma_zero_disables_the_regularizer(trained, digits):
    """γ = 0: κ̂ is still estimated for the log but never enters the loss -- the gates train exactly as
    with no κ̂ at all; γ > 0 changes them."""
    model = trained["mlp"]
    ctx = _ctx(model, digits, flops_keep=0.5, epochs=1)
    opts = dict(FAST, eval_samples=0, warmup=1.0)
    off = get_method("pl-gates", dict(opts, gamma=0.0)).fit(model, ctx)
    none = get_method("pl-gates", dict(opts, gamma=0.0, kappa_every=0)).fit(model, ctx)
    on = get_method("pl-gates", dict(opts, gamma=1.0)).fit(model, ctx)
    assert len(off.history["kappa"]) > 0 and len(none.history["kappa"]) == 0
    assert off.history["kappa_in_loss"] is False and on.history["kappa_in_loss"] is True
    assert all(e["kappa_loss"] == 0 for e in off.history["epochs"])
    assert off.history["gate_open_final"] == none.history["gate_open_final"]
    assert off.history["gate_open_final"] != on.history["gate_open_final"]
    assert any(e["kappa_loss"] != 0 for e in on.history["epochs"])


def test_static_plan_drops_branches_exactly(digits):
    """Closed branch gates become dropped residual branches; the folded model + plan compact and verify."""
    torch.manual_seed(0)
    shape = (1, 8, 8)
    model = build_model("resnet", shape, 10, widths=(8, 16), blocks=2).eval()
    _randomize_bn(model)
    data = dict(digits, shape=shape)
    ctx = _ctx(model, data, flops_keep=0.6)
    assert ctx.graph.branches
    net = GatedNetwork(model, ctx.graph, branches=True, gate_init=3.0, temperature=2 / 3)
    with torch.no_grad():
        net.branch_log_alpha[0] = -6.0  # closed: drop
        net.branch_log_alpha[1:] = 0.5  # open with a test-time gate < 1: folded into the branch
        net.log_alpha.copy_(torch.linspace(-3, 4, net.masks.n)[torch.randperm(net.masks.n)])
    method = PLGates(**FAST)
    plan, info = method._static_plan(net, ctx)
    net.close()
    assert plan.dropped == [list(ctx.graph.branches)[0]]
    assert info["fold_max_abs_diff"] < 1e-5 and info["unfolded_branch_scales"] == []
    kept = plan.predicted_cost(ctx.graph)["macs"] / ctx.graph.dense_cost()["macs"]
    assert abs(kept / 0.6 - 1) <= 0.05
    small, _ = compact_and_verify(model, plan, ctx.example, torch.from_numpy(digits["xte"][:32]), ctx.graph)
