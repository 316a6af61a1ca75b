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
    # the counters the benchmark harness tabulates: nothing removed, every branch survives, the full network trained
    x = res.extras
    assert x["units_removed_in_training"] == 0 and x["surviving_branches"] == len(res.history["branch_pi_final"]) > 0
    assert x["train_fwd_macs_pct"] == pytest.approx(100.0) and x["last_epoch_fwd_macs_pct"] == pytest.approx(100.0)


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
    x = res.extras  # recorded per row by the harness: removal during training shows as fewer forward MACs
    assert x["surviving_branches"] == len(h["branch_pi_final"]) - len(res.plan.dropped)
    assert x["units_removed_in_training"] == h["units_removed_in_training"]
    assert x["last_epoch_fwd_macs_pct"] < 100.0 and x["train_fwd_macs_pct"] >= x["last_epoch_fwd_macs_pct"]


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
    # counted on the model, gated or not: units-only keeps every residual branch
    assert res.extras["surviving_branches"] == len(ctx.graph.branches) - len(res.plan.dropped) > 0


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


def _remove(net, units, branches):
    """Remove structures for good the way :meth:`BernoulliNetwork.remove_stale` does."""
    with torch.no_grad():
        for i in units:
            net.alive[i] = False
            net.pi[i] = 0.0
        for i in branches:
            net.alive_b[i] = False
            net.pi_b[i] = 0.0


def _sampled_outputs(net, x, seed):
    """The gated forward for one fixed Bernoulli sample (removed structures 0), in eval and in train mode."""
    g = torch.Generator().manual_seed(seed)
    z = (torch.rand(net.masks.n, generator=g) < 0.8).float() * net.alive.float()
    zb = (torch.rand(len(net.branch_names), generator=g) < 0.7).float() * net.alive_b.float()
    outs = []
    for mode in (False, True):
        net.train(mode)
        bn_state = {k: v.clone() for k, v in net.model.state_dict().items()}
        with torch.no_grad():
            outs.append(net.run(x, z, zb))
        net.model.load_state_dict(bn_state)  # a train-mode forward moves the BN statistics: undo
    net.eval()
    return outs


def test_live_compaction_computes_the_masked_network(digits):
    """Cutting removed structures out mid-training (twice) keeps the gated forward within 1e-5, carries the kept
    weights' momentum over, shrinks the model, and restore() gives back the original model computing the same."""
    from edgeprune.methods.live_compaction import LiveCompaction

    seed_everything(0)
    model = build_model("resnet", digits["shape"], 10)
    ex = torch.zeros(1, *digits["shape"])
    graph = analyze(model, ex)
    net = BernoulliNetwork(model, graph, units=True, branches=True, pi_init=0.9)
    live = LiveCompaction(net, graph, ex)
    opt = torch.optim.SGD(net.model.parameters(), lr=0.05, momentum=0.9)
    x = torch.from_numpy(digits["xtr"][:32])
    y = torch.from_numpy(digits["ytr"][:32])

    def train_steps(k):
        net.train()
        for _ in range(k):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()

    train_steps(3)
    g = torch.Generator().manual_seed(3)
    n_params = sum(p.numel() for p in net.model.parameters())
    for round_, (units, branches) in enumerate([(torch.randperm(net.masks.n, generator=g)[:40].tolist(), [1]),
                                                (torch.randperm(net.masks.n, generator=g)[:40].tolist(), [0])]):
        _remove(net, units, branches)
        before = _sampled_outputs(net, x, round_)
        some = next(p for p in net.model.parameters() if p.dim() == 4)
        ev = live.step(opt, x[:8], step=round_)
        assert ev is not None and ev["rel_diff"] <= 1e-5 and live.enabled
        after = _sampled_outputs(net, x, round_)
        for a, b in zip(before, after):
            assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())
        smaller = sum(p.numel() for p in net.model.parameters())
        assert smaller < n_params and smaller == ev["params"]  # the cost table predicts the compact model
        n_params = smaller
        # the optimizer now trains the compact parameters, with momentum carried over
        ids = {id(p) for grp in opt.param_groups for p in grp["params"]}
        assert all(id(p) in ids for p in net.model.parameters()) and id(some) not in ids
        assert all("momentum_buffer" in opt.state[p] for p in net.model.parameters() if p.dim() == 4)
        train_steps(2)
    assert not live.pending()
    ref = _sampled_outputs(net, x, 7)
    restored = live.restore()
    assert restored is model and net.model is model
    for a, b in zip(ref, _sampled_outputs(net, x, 7)):
        assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())


def test_compaction_in_training_saves_macs_and_keeps_the_result(digits):
    """The same run with and without physical removal: fewer forward MACs per epoch, the same plan (units only:
    a removed branch already stops being computed without compaction)."""
    runs = {}
    for cut in (True, False):
        seed_everything(0)
        model = build_model("resnet", digits["shape"], 10)
        ctx = _ctx(model, digits, epochs=2)
        opts = {"lam": 30.0, "epochs": 2, "pi_lr": 0.5, "patience": 3, "pi_min": 0.2, "eval_samples": 0,
                "calib_samples": 128, "branches": False, "compact_in_training": cut}
        runs[cut] = get_method("complexity-aware", opts).fit(model, ctx)
    on, off = runs[True].history, runs[False].history
    assert on["compactions"] and all(e["rel_diff"] <= 1e-5 for e in on["compactions"])
    assert on["units_removed_in_training"] > 0
    assert on["epoch_forward_macs_kept"][-1] < off["epoch_forward_macs_kept"][-1]
    assert runs[True].plan.keep == runs[False].plan.keep and runs[True].plan.dropped == runs[False].plan.dropped


@pytest.mark.parametrize("name", ["mobilenetv2", "concat", "cnn"])
def test_live_compaction_on_depthwise_concat_and_flatten_models(digits, name):
    """Depthwise groups, a concat feeding a residual add, a flatten -> linear remap: the cut model computes the masked one."""
    from edgeprune.methods.live_compaction import LiveCompaction

    seed_everything(0)
    model = build_model(name, digits["shape"], 10)
    ex = torch.zeros(1, *digits["shape"])
    graph = analyze(model, ex)
    net = BernoulliNetwork(model, graph, units=True, branches=True, pi_init=0.9)
    live = LiveCompaction(net, graph, ex)
    x = torch.from_numpy(digits["xtr"][:16])
    _remove(net, torch.randperm(net.masks.n, generator=torch.Generator().manual_seed(3))[: net.masks.n // 5].tolist(),
            [0] if net.branch_names else [])
    before = _sampled_outputs(net, x, 0)
    ev = live.step(None, x, step=0)
    assert ev is not None and ev["params"] == sum(p.numel() for p in net.model.parameters())
    for a, b in zip(before, _sampled_outputs(net, x, 0)):
        assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())


def test_polarize_drives_pi_to_zero_or_one(digits):
    seed_everything(0)
    model = build_model("resnet", digits["shape"], 10)
    ctx = _ctx(model, digits, flops_keep=0.5, epochs=1)
    opts = {"epochs": 1, "eval_samples": 0, "calib_samples": 128, "warmup": 0.2, "polarize": 5.0}
    h = get_method("complexity-aware", opts).fit(model, ctx).history
    # without the penalty the live π sit near 0.7-0.9 (distance ~0.1-0.2, every one undecided)
    assert h["epochs"][-1]["pi_distance_to_binary"] < 0.01 and h["epochs"][-1]["pi_undecided"] <= 2
