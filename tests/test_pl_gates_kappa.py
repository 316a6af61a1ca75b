"""pl-gates, issue 16: a scale-free κ̂, the calibrated κ̂ term, κ̂ as the pruning criterion, the gating network,
the loss-level κ̂ = L̂/μ̂."""

import copy

import numpy as np
import pytest
import torch

from edgeprune.data import load_dataset
from edgeprune.errors import ConfigError
from edgeprune.methods import FitContext, get_method
from edgeprune.methods.gating import kept_overlap, loss_level_kappa, tangent_kernel, timed_kappa
from edgeprune.methods.pl_gates import GatedNetwork
from edgeprune.models import build_model
from edgeprune.surgery import analyze, compact_and_verify
from edgeprune.train import seed_everything, train

FAST = {"kappa_every": 4, "kappa_batch": 8, "eval_samples": 100, "calib_samples": 128}


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return {"shape": ds.input_shape, "xtr": ds.normalize(ds.x_train[:512]), "ytr": ds.y_train[:512],
            "xv": ds.normalize(ds.x_val), "yv": ds.y_val}


@pytest.fixture(scope="module")
def cnn(digits):
    seed_everything(0)
    m = build_model("cnn", digits["shape"], 10)
    train(m, digits["xtr"], digits["ytr"], epochs=2, lr=0.05, seed=0)
    return m


def _ctx(model, data, flops_keep=0.5, epochs=1):
    ex = torch.zeros(1, *data["shape"])
    return FitContext(data["xtr"], data["ytr"], data["xv"], data["yv"], ex, analyze(model, ex), "classification",
                      flops_keep, 1, 0, {"epochs": epochs, "lr": 0.05, "batch_size": 64, "weight_decay": 5e-4},
                      log=lambda s: None)


def test_kappa_is_scale_free(cnn, digits):
    """κ̂ = λmax/λmin of the tangent kernel on 32 real samples does not move when the logits are rescaled
    (the old sqrt(λmax)/λmin moved by 1/c)."""
    net = GatedNetwork(cnn, analyze(cnn, torch.zeros(1, *digits["shape"])), branches=False, gate_init=3.0,
                       temperature=2 / 3)
    params = {k: v.detach() for k, v in cnn.named_parameters()}
    z = torch.ones(net.masks.n)
    xs = torch.from_numpy(digits["xtr"][:32])
    cnn.eval()

    def f(c):
        return lambda p, x: c * net.run(x.unsqueeze(0), z, torch.zeros(0), p).reshape(-1)

    base, scaled = timed_kappa(f(1.0), params, xs), timed_kappa(f(7.0), params, xs)
    net.close()
    assert base.rows == 320 and np.isfinite(float(base.kappa)) and float(base.kappa) > 1
    assert float(scaled.kappa) == pytest.approx(float(base.kappa), rel=1e-4)
    assert scaled.lam_max == pytest.approx(49 * base.lam_max, rel=1e-4)  # the kernel itself did scale by c²
    old = lambda e: np.sqrt(e.lam_max) / e.lam_min  # noqa: E731 - the earlier, scale-dependent form
    assert old(scaled) == pytest.approx(old(base) / 7, rel=1e-3)


def test_tangent_kernel_is_psd_and_symmetric(cnn, digits):
    params = {k: v.detach() for k, v in cnn.named_parameters()}
    cnn.eval()
    k = tangent_kernel(lambda p, x: torch.func.functional_call(cnn, p, (x.unsqueeze(0),)).reshape(-1), params,
                       torch.from_numpy(digits["xtr"][:4]))
    assert k.shape == (40, 40) and torch.allclose(k, k.T, atol=1e-5 * float(k.abs().max()))
    assert float(torch.linalg.eigvalsh(k.double())[0]) > -1e-6 * float(k.abs().max())


def test_calibrated_term_matches_the_task_gradient(cnn, digits):
    """gamma_calibrate: c = ‖task gradient on the gates‖ / ‖term gradient‖ at the first estimate, so with γ = 1
    the κ̂ term's gate gradient starts exactly as large as the task's."""
    res = get_method("pl-gates", dict(FAST, gamma=1.0)).fit(cnn, _ctx(cnn, digits))
    cal = res.history["gamma_scale"]
    assert cal["c"] > 0 and cal["task_grad_norm"] > 0 and cal["term_grad_norm"] > 0
    assert cal["c"] * cal["term_grad_norm"] == pytest.approx(cal["task_grad_norm"], rel=1e-6)
    assert res.history["kappa_first"] == res.history["kappa"][0]
    assert any(e["kappa_loss"] > 0 for e in res.history["epochs"])


def test_kappa_score_changes_the_kept_set(cnn, digits):
    """score=kappa ranks nodes by -d log κ̂/d gate: a different kept set from the logits', same budget, compacts."""
    ctx = _ctx(cnn, digits, flops_keep=0.4)
    logit = get_method("pl-gates", dict(FAST, gamma=0.0)).fit(cnn, ctx)
    kap = get_method("pl-gates", dict(FAST, gamma=0.0, score="kappa")).fit(cnn, ctx)
    sens = kap.history["kappa_sensitivity"]
    assert set(sens) == set(kap.plan.keep) and all(np.isfinite(v).all() for v in sens.values())
    ov = kept_overlap(logit.plan.keep, kap.plan.keep)
    assert set(ov) == set(kap.plan.keep) and min(ov.values()) < 1.0  # the criterion changes what is pruned
    assert abs(kap.history["budget"]["rel_error"]) <= 0.05
    _, report = compact_and_verify(kap.model, kap.plan, ctx.example, torch.from_numpy(digits["xv"][:32]), ctx.graph)
    assert report["macs"] == kap.plan.predicted_cost(ctx.graph)["macs"]
    with pytest.raises(ConfigError, match="kappa_every"):
        get_method("pl-gates", {"score": "mixed", "kappa_every": 0})


def test_kept_overlap():
    assert kept_overlap({"a": [0, 1, 2], "b": [3]}, {"a": [1, 2, 5], "b": [3]}) == {"a": 2 / 3, "b": 1.0}


def test_gating_network_trains_and_gives_a_static_plan(cnn, digits):
    """gates=network: the network's weights move, the plan comes from calibration statistics, meets the budget
    and compacts exactly."""
    ctx = _ctx(cnn, digits, 0.5, epochs=2)
    res = get_method("pl-gates", dict(FAST, gamma=0.5, gates="network")).fit(cnn, ctx)
    h = res.history
    assert h["gates"] == "network" and h["gate_network_calibration_batches"] == 2  # 128 samples, batches of 64
    assert h["gate_network_offset_std"] > 0  # the network learned node-dependent offsets
    assert abs(h["budget"]["rel_error"]) <= 0.05 and h["static_val_metric"] > 50
    _, report = compact_and_verify(res.model, res.plan, ctx.example, torch.from_numpy(digits["xv"][:32]), ctx.graph)
    assert report["macs"] == res.plan.predicted_cost(ctx.graph)["macs"]


def test_loss_level_kappa_is_exact_on_a_quadratic():
    """L(w) = ½ wᵀAw (L* = 0): at an eigenvector of eigenvalue a, μ̂ = ‖Aw‖²/(wᵀAw) = a exactly, the power
    iteration finds L̂ = λmax(A), so κ̂ = λmax/a; scaling the loss by c leaves κ̂ unchanged."""
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 6)))
    eig = np.array([0.5, 1.0, 2.0, 3.0, 5.0, 40.0])
    a = torch.from_numpy(q @ np.diag(eig) @ q.T)
    w = torch.from_numpy(q[:, 1].copy())  # eigenvalue 1.0
    for c in (1.0, 9.0):
        est = loss_level_kappa(lambda p: c * 0.5 * p["w"] @ a @ p["w"], {"w": w}, power_steps=60)
        assert est.lam_min == pytest.approx(c * 1.0, rel=1e-9)
        assert est.lam_max == pytest.approx(c * 40.0, rel=1e-6)
        assert float(est.kappa.detach()) == pytest.approx(40.0, rel=1e-6)
    # an indefinite Hessian (eigenvalues -40 and +39.9: the Rayleigh quotient of a mixed v cancels): L̂ = |λ|max
    ind = torch.from_numpy(q @ np.diag([-40.0, 39.9, 2.0, 1.0, 0.5, 0.1]) @ q.T)
    est = loss_level_kappa(lambda p: 0.5 * p["w"] @ ind @ p["w"] + 100.0, {"w": w}, power_steps=60)
    assert est.lam_max == pytest.approx(40.0, rel=1e-2)


def test_loss_level_kappa_gradient_reaches_the_gates_and_the_method_runs(cnn, digits):
    """kappa_estimator=loss: μ̂ is differentiable in the gates (never in the weights), and a calibrated run
    records finite estimates, a term in the loss and a plan that meets the budget."""
    model = copy.deepcopy(cnn).eval()
    for p in model.parameters():
        p.grad = None
    net = GatedNetwork(model, analyze(model, torch.zeros(1, *digits["shape"])), branches=False, gate_init=1.0,
                       temperature=2 / 3)
    z, zb = net.sample(torch.Generator().manual_seed(0))
    est = net.kappa_loss_level(torch.from_numpy(digits["xtr"][:16]), torch.from_numpy(digits["ytr"][:16]).long(),
                               z, zb, "classification")
    torch.log(est.kappa).backward()
    g = net.log_alpha.grad
    assert g is not None and torch.isfinite(g).all() and float(g.abs().sum()) > 0
    assert all(p.grad is None for p in model.parameters())  # the term trains the gates only
    assert est.lam_min > 0 and est.lam_max > 0 and float(est.kappa.detach()) == pytest.approx(est.lam_max / est.lam_min)
    net.close()
    res = get_method("pl-gates", dict(FAST, gamma=1.0, kappa_estimator="loss")).fit(cnn, _ctx(cnn, digits))
    h = res.history
    assert len(h["kappa"]) >= 2 and all(np.isfinite(h["kappa"])) and h["gamma_scale"]["c"] > 0
    assert any(e["kappa_loss"] > 0 for e in h["epochs"]) and abs(h["budget"]["rel_error"]) <= 0.05
