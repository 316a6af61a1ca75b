"""The method platform's parts: option declarations, the training hook in the one loop, reusable gates."""

import copy
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune import config
from edgeprune.data import load_dataset
from edgeprune.errors import ConfigError
from edgeprune.methods import get_method, method_info
from edgeprune.methods.gates import (BernoulliST, GatedModel, HardConcrete, SigmoidST, StaticView, get_gate,
                                     recalibrate_bn)
from edgeprune.methods.options import build_options, option, parse_assignments
from edgeprune.models import build_model
from edgeprune.surgery import analyze
from edgeprune.train import TrainHook, train


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits", limit=400)
    return ds.normalize(ds.x_train), ds.y_train


# ------------------------------------------------------------------ options


@dataclass
class _Opts:
    rate: float = option(0.5, "a rate", min=0, max=1)
    steps: int = option(3, "steps", gt=0)
    mode: Literal["a", "b"] = option("a", "mode")
    epochs: int | None = option(None, "epochs", min=0, from_run="train.epochs")
    flag: bool = option(False, "a flag")

    def __post_init__(self):
        if self.mode == "b" and self.steps < 2:
            raise ValueError("mode b needs steps >= 2")


def test_options_are_validated_from_the_declaration():
    o = build_options(_Opts, {"rate": 1, "steps": 4.0, "epochs": None}, "toy")
    assert o.rate == 1.0 and isinstance(o.rate, float) and o.steps == 4 and isinstance(o.steps, int)
    with pytest.raises(ConfigError, match=r"method 'toy' has no option\(s\) \['rte'\]; options: epochs, flag, mode"):
        build_options(_Opts, {"rte": 1}, "toy")
    for bad, what in [({"rate": 1.5}, r"rate=1.5: expected a value <= 1"), ({"steps": 0}, r"steps=0: expected a value > 0"),
                      ({"steps": 2.5}, "expected an integer"), ({"mode": "c"}, r"expected one of \['a', 'b'\]"),
                      ({"flag": "yes"}, "expected true or false"), ({"rate": "x"}, "expected a number"),
                      ({"rate": float("nan")}, "finite")]:
        with pytest.raises(ConfigError, match=what):
            build_options(_Opts, bad, "toy")
    with pytest.raises(ConfigError, match="mode b needs steps >= 2"):  # __post_init__ rules become ConfigErrors
        build_options(_Opts, {"mode": "b", "steps": 1}, "toy")


def test_command_line_values_parse_as_toml():
    assert parse_assignments(["gamma=0.1", "branches=false", "kappa_loss=log", "kappa_every = 4", 'x="a b"']) == {
        "gamma": 0.1, "branches": False, "kappa_loss": "log", "kappa_every": 4, "x": "a b"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignments(["gamma"])


def test_one_declaration_for_methods_config_and_listing():
    info = method_info("pl-gates")
    opts = {o["name"]: o for o in info["options"]}
    assert info["trains"] and opts["gamma"]["default"] == 0.1 and opts["gamma"]["min"] == 0
    assert opts["epochs"]["default"] is None and opts["epochs"]["from_run"] == "train.epochs"  # one default: the run's
    assert get_method("pl-gates").own_epochs({"epochs": config.defaults()["train"]["epochs"]}) == 12
    assert method_info("l1")["options"] == [] and not method_info("l1")["trains"]
    # [method.<name>] tables: each checked against its method; the chosen one's becomes method_options,
    # [method_options] overrides it
    cfg = config.merge(config.defaults(), {"method": {"name": "pl-gates", "pl-gates": {"gamma": 0.2, "epochs": 3}}},
                       "a.toml")
    cfg = config.merge(cfg, {"method_options": {"epochs": 2}}, "command line")
    config._fold_method_tables(cfg)
    config.validate(cfg)
    assert cfg["method_options"] == {"gamma": 0.2, "epochs": 2} and "_method_tables" not in cfg
    with pytest.raises(ConfigError, match="'l1' has no option"):
        config.resolve(None, {"method": {"l1": {"gamma": 1}}})
    with pytest.raises(ConfigError, match=r"gamma=-1: expected a value >= 0"):
        config.resolve(None, {"method": {"name": "pl-gates"}, "method_options": {"gamma": -1}})


# ------------------------------------------------------------------ the training hook


class _Recorder(TrainHook):
    """An extra parameter in its own Adam group with its own lr, a loss term on it, and every callback logged."""

    def __init__(self):
        self.p = nn.Parameter(torch.tensor([2.0]))
        self.calls = []

    def begin(self, schedule):
        self.schedule = schedule

    def params(self):
        return [{"params": [self.p], "lr": 0.1, "optimizer": "adam"}]

    def loss(self, model, batch, step):
        self.calls.append(("loss", step, len(batch[0])))
        return (self.p ** 2).sum()

    def after_backward(self, model, step):
        self.calls.append(("grad", step, float(self.p.grad)))

    def after_step(self, model, step):
        self.calls.append(("step", step))

    def after_epoch(self, model, epoch):
        return {"p": float(self.p.detach())}


def test_hook_gets_its_own_optimizer_group_and_every_callback(digits):
    x, y = digits
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10)
    hook = _Recorder()
    hist = train(model, x[:200], y[:200], epochs=2, batch_size=50, hooks=[hook], lr=0.05)
    assert hook.schedule.steps_per_epoch == 4 and hook.schedule.total_steps == 8
    assert [c[:2] for c in hook.calls if c[0] == "loss"] == [("loss", s) for s in range(8)]
    assert hook.calls[:3] == [("loss", 0, 50), ("grad", 0, 4.0), ("step", 0)]  # d(p^2)/dp at p = 2
    # p followed Adam at lr 0.1 under the loop's cosine schedule, not the model's SGD at lr 0.05
    ref = nn.Parameter(torch.tensor([2.0]))
    opt = torch.optim.Adam([ref], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, 8) / 8)))
    for _ in range(8):
        opt.zero_grad()
        (ref ** 2).sum().backward()
        opt.step()
        sched.step()
    assert hist.epochs[-1]["p"] == pytest.approx(float(ref.detach()), abs=1e-6)
    assert all("p" in r and r["extra_loss"] > 0 for r in hist.epochs)


def test_extra_loss_keyword_is_the_same_loop_as_a_hook(digits):
    x, y = digits

    class L2(TrainHook):
        def loss(self, model, batch, step):
            return 1e-3 * sum((p ** 2).sum() for p in model.parameters())

    def run(**kw):
        torch.manual_seed(0)
        m = build_model("mlp", (1, 8, 8), 10)
        train(m, x[:128], y[:128], epochs=1, seed=3, **kw)
        return m.state_dict()

    a = run(hooks=[L2()])
    b = run(extra_loss=lambda m, xb, yb, s: 1e-3 * sum((p ** 2).sum() for p in m.parameters()))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = run()
    assert not all(torch.equal(a[k], c[k]) for k in a)


# ------------------------------------------------------------------ gates


def test_gate_distributions_sample_their_keep_probability():
    theta = torch.tensor([-2.0, 0.0, 1.5])
    for gate in (HardConcrete(), SigmoidST(), BernoulliST("logit")):
        z = torch.stack([gate.sample(theta, torch.Generator().manual_seed(i)) for i in range(3000)]).detach()
        assert ((z >= 0) & (z <= 1)).all(), gate.name
        assert torch.allclose((z > 0).float().mean(0), gate.prob_open(theta), atol=0.035), gate.name
    pi = torch.tensor([0.1, 0.5, 0.9])
    xi = torch.stack([BernoulliST().sample(pi, torch.Generator().manual_seed(i)) for i in range(3000)]).detach()
    assert set(xi.unique().tolist()) <= {0.0, 1.0} and torch.allclose(xi.mean(0), pi, atol=0.03)
    assert get_gate("bernoulli-st").name == "bernoulli-st"
    with pytest.raises(ValueError, match="unknown gate"):
        get_gate("gumbel")


def test_straight_through_gradients_reach_the_parameters():
    for gate, theta in ((SigmoidST(), torch.zeros(4, requires_grad=True)),
                        (BernoulliST(), torch.full((4,), 0.5, requires_grad=True))):
        z = gate.sample(theta, torch.Generator().manual_seed(0))
        (z * torch.arange(1.0, 5.0)).sum().backward()
        assert theta.grad is not None and (theta.grad > 0).all(), gate.name
    pi = nn.Parameter(torch.tensor([-0.2, 0.4, 1.3]))
    BernoulliST().project_(pi)
    assert pi.tolist() == pytest.approx([0.0, 0.4, 1.0])


def test_bernoulli_gates_under_a_macs_penalty_close_in_the_one_loop(digits):
    """The shape of the next method (complexity-aware pruning): Bernoulli gates with a straight-through estimator,
    trained with the weights in the one loop by a hook (own Adam group, E[MACs] loss, projection after each step)."""
    x, y = digits
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, widths=(8, 16), hidden=16)
    graph = analyze(model, torch.zeros(1, 1, 8, 8))
    net = GatedModel(model, graph, gate=BernoulliST(), init=0.9)
    net.generator = torch.Generator().manual_seed(0)
    dense = float(graph.dense_cost()["macs"])

    class Complexity(TrainHook):
        def params(self):
            return [{"params": net.gate_parameters(), "lr": 0.05, "optimizer": "adam"}]

        def loss(self, model, batch, step):
            return 2.0 * net.expected_macs() / dense

        def after_step(self, model, step):
            net.project_()

    before = float(net.expected_macs().detach()) / dense
    train(net, x, y, epochs=2, hooks=[Complexity()], generator=net.generator)
    after = float(net.expected_macs().detach()) / dense
    net.close()
    assert before == pytest.approx(0.9 ** 2, rel=0.05) and after < before - 0.2
    assert float(net.logits.min()) >= 0.0 and float(net.logits.max()) <= 1.0  # projected onto [0, 1]


def test_fold_and_bn_recalibration_give_the_static_network():
    torch.manual_seed(0)
    model = build_model("resnet", (1, 8, 8), 10, widths=(8, 16), blocks=2).eval()
    graph = analyze(model, torch.zeros(1, 1, 8, 8))
    net = GatedModel(model, graph, gate=HardConcrete(), init=0.5)
    gen = torch.Generator().manual_seed(1)
    z = torch.rand(net.masks.n, generator=gen)
    zb = torch.rand(len(net.branch_names), generator=gen) + 0.2
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        gated = net.run(x, z, zb)
        ones = torch.ones(len(net.branch_names))
        assert net.fold_(z, zb) == []  # every branch scale folds into its last layer
        folded = net.run(x, torch.ones(net.masks.n), ones)
        plain = copy.deepcopy(model).eval()(x)
    assert torch.allclose(gated, folded, atol=1e-5) and torch.allclose(folded, plain, atol=1e-6)

    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    seen = []
    h = bn.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach()))
    keep, keep_b = (torch.rand(net.masks.n, generator=gen) > 0.3).float(), ones
    recalibrate_bn(net, x, keep, keep_b)
    h.remove()
    # one batch, cumulative average: the running mean is the mean of what the BN sees in the static network
    assert torch.allclose(bn.running_mean, seen[0].mean(dim=(0, 2, 3)), atol=1e-6)
    static = StaticView(net, keep, keep_b).eval()
    assert static(x).shape == (16, 10)
    net.close()
    assert np.isfinite(float(static.net.run(x, keep, keep_b).sum()))


# ------------------------------------------------------------------ plots declared by the method


def test_plot_declarations_are_checked_and_old_histories_get_their_class_declaration():
    from edgeprune.methods.pl_gates import PLGates
    from edgeprune.report.build import _with_plots
    from edgeprune.report.html import _plot_method, check_plots

    h = {"loss": [1.0, 0.5], "plots": {"panels": [{"title": "t", "series": [{"y": "loss"}, {"y": "nope"}]},
                                                  {"series": [{"x": "loss"}], "colour": "red"}]}}
    problems = check_plots(h)
    assert len(problems) == 2 and "'nope' is not a key" in problems[0] and "keys must be among" in problems[1]
    assert _plot_method({"method": {"history": h}, "model": {}}) is None  # not drawn half-way
    old = {"method": "pl-gates", "history": {"kappa": [3.0, 2.0], "kappa_step": [0, 20]}}
    assert _with_plots(old)["history"]["plots"] is PLGates.plots and "plots" not in old["history"]
    assert _with_plots({"method": "l1", "history": {}}) == {"method": "l1", "history": {}}
