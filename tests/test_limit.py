"""The pruning-limit estimator: SLQ against an exact Hessian, the threshold against hand values,
the global magnitude sweep, the L1 hook and the build guard."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from edgeprune.data import load_dataset
from edgeprune.limit import GlobalMagnitude, L1Penalty, LimitSettings, actual_limit, estimate_limit
from edgeprune.limit.slq import Density, HessianOperator, hessian_density, lanczos, prunable_weights
from edgeprune.limit.threshold import RadiusCurve, g_of_r, predict_limit, with_zero_mass
from edgeprune.models import build_model
from edgeprune.train import train


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits", seed=0)
    return d.normalize(d.x_train), d.y_train, d.normalize(d.x_test), d.y_test


@pytest.fixture(scope="module")
def tiny(digits):
    """A trained 64-6-10 MLP on 300 digits and its exact Hessian w.r.t. the prunable weights."""
    x, y = digits[0][:300], digits[1][:300]
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, hidden=(6,))
    train(model, x, y, epochs=15, lr=0.05)
    names = [n for n, _ in prunable_weights(model)]
    shapes = [p.shape for _, p in prunable_weights(model)]
    flat0 = torch.cat([p.detach().reshape(-1) for _, p in prunable_weights(model)])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def loss_of(flat):
        params, off = {}, 0
        for n, s in zip(names, shapes):
            params[n] = flat[off:off + s.numel()].view(s)
            off += s.numel()
        return F.cross_entropy(functional_call(model, params, (xt,)), yt)

    H = torch.autograd.functional.hessian(loss_of, flat0, vectorize=True).double()
    return model, x, y, H


def test_hvp_is_the_exact_hessian_times_v(tiny):
    model, x, y, H = tiny
    op = HessianOperator(model, [p for _, p in prunable_weights(model)], x, y, chunk=128)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(op(v), H @ v, rtol=1e-4, atol=1e-6 * float(H.abs().max()))


def test_slq_density_matches_exact_eigendecomposition(tiny):
    model, x, y, H = tiny
    evals, evecs = torch.linalg.eigh(H)
    D = H.shape[0]
    # one start vector: Gauss quadrature is exact for v^T H^k v up to degree 2m-1
    v = torch.randint(0, 2, (D,), generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2 - 1
    op = HessianOperator(model, [p for _, p in prunable_weights(model)], x, y)
    nodes, w = lanczos(op, D, 30, v)
    c2 = (evecs.T @ v) ** 2 / D
    for k in range(1, 5):
        exact = float((c2 * evals ** k).sum())
        assert abs(float((w * nodes ** k).sum()) - exact) <= 1e-4 * abs(exact) + 1e-9
    # the extreme Ritz values are the extreme eigenvalues
    assert nodes.max() == pytest.approx(float(evals.max()), rel=1e-4)
    assert nodes.min() == pytest.approx(float(evals.min()), abs=1e-4 * float(evals.abs().max()))
    # averaged density: weights sum to 1, moments estimate tr(H^k)/D (stochastic: 16 vectors)
    dens, products = hessian_density(model, x, y, steps=40, n_vectors=16, seed=0)
    assert dens.weights.sum() == pytest.approx(1.0, abs=1e-9)
    assert products == 16 * 40
    for k in (1, 2):
        exact = float((evals ** k).sum()) / D
        assert dens.moment(k) == pytest.approx(exact, rel=0.15)


def test_threshold_on_a_hand_made_spectrum():
    dens = Density(np.array([0.0, 1.0, -4.0]), np.array([0.5, 0.25, 0.25]))
    # eps = 0.5: 2 eps = 1; g(1) = 0.5 + 0.25/(1+1) + 0.25/(1+4) = 0.675 (negative eigenvalue by |.|)
    assert g_of_r(1.0, dens, 0.5) == pytest.approx(0.675, abs=1e-12)
    assert g_of_r(0.0, dens, 0.5) == pytest.approx(1.0)
    # R(s) continuous: w^2 sorted = 1, 4, 9, 16 -> R^2(0.5) = 5, R^2(0.625) = 5 + 0.5 * 9
    rc = RadiusCurve(np.array([4.0, -1.0, 3.0, 2.0]))
    assert rc.r2(0.5) == pytest.approx(5.0) and rc.r2(0.625) == pytest.approx(9.5) and rc(1.0) == pytest.approx(math.sqrt(30))
    # one eigenvalue theta, D equal weights of w^2 = c: R^2 = s*D*c = s*C, s = 2e/(2e + theta*C*s)
    # -> theta*C*s^2 + 2e*s - 2e = 0 -> s* = (-2e + sqrt(4e^2 + 8e*theta*C)) / (2*theta*C)
    theta, c, D, eps = 3.0, 0.01, 1000, 0.2
    C = c * D
    s_hand = (-2 * eps + math.sqrt(4 * eps * eps + 8 * eps * theta * C)) / (2 * theta * C)
    s = predict_limit(Density(np.array([theta]), np.array([1.0])), eps, RadiusCurve(np.full(D, math.sqrt(c))))
    assert s == pytest.approx(s_hand, abs=1e-6)
    # zero-curvature mass: a fraction z that is free to prune lifts g by z everywhere
    zm = with_zero_mass(Density(np.array([theta]), np.array([1.0])), 0.3)
    assert g_of_r(2.0, zm, eps) == pytest.approx(0.3 + 0.7 * 2 * eps / (2 * eps + theta * 4), abs=1e-12)


def test_s_star_rises_with_epsilon():
    rng = np.random.default_rng(0)
    dens = Density(rng.normal(0, 1, 60), rng.dirichlet(np.ones(60)))
    rc = RadiusCurve(rng.laplace(0, 0.05, 5000))
    s = [predict_limit(dens, eps, rc) for eps in (1e-4, 1e-3, 1e-2, 0.1, 1.0)]
    assert all(b > a for a, b in zip(s, s[1:])), s
    assert 0 < s[0] and s[-1] < 1
    with pytest.raises(ValueError):
        predict_limit(dens, 0.0, rc)


def test_global_magnitude_prunes_the_smallest_and_restores():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gm = GlobalMagnitude(model)
    assert gm.D == 36 + 4 * 36 * 5
    k = gm.apply(0.4)
    assert k == int(0.4 * gm.D)
    w = torch.cat([p.detach().reshape(-1) for _, p in prunable_weights(model)])
    orig = torch.cat([p.reshape(-1) for p in gm.original])
    assert int((w == 0).sum()) == k
    assert float(orig[w == 0].abs().max()) <= float(orig[w != 0].abs().min())  # global, not per layer
    assert torch.equal(model[1].weight, before["1.weight"]) and torch.equal(model[3].bias, before["3.bias"])
    gm.restore()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_l1_hook_and_actual_limit(digits):
    xtr, ytr, xte, yte = digits
    pen = L1Penalty(1e-3)
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, -1.0]]))
        lin.bias.copy_(torch.tensor([0.5, -0.5]))
    assert float(pen(nn.Sequential(lin, nn.BatchNorm1d(2)), None, None, 0).detach()) == pytest.approx(1e-3 * 5.5)
    norms = {}
    for lam in (0.0, 3e-3):
        torch.manual_seed(0)
        m = build_model("mlp", (1, 8, 8), 10)
        train(m, xtr, ytr, epochs=8, lr=0.05, weight_decay=0.0, extra_loss=L1Penalty(lam) if lam else None)
        norms[lam] = sum(float(p.detach().abs().sum()) for _, p in prunable_weights(m))
        res = actual_limit(m, xte, yte, tolerance=1.0)
        curve = dict(res["curve"])
        assert curve[0.0] == res["dense_metric"]
        assert all(acc >= res["dense_metric"] - 1.0 for s, acc in curve.items() if s <= res["limit"])
        assert res["limit"] < 1.0 and min(curve.values()) < res["dense_metric"] - 1.0
        assert all(torch.count_nonzero(p) == p.numel() for _, p in prunable_weights(m))  # restored
    assert norms[3e-3] < 0.7 * norms[0.0]


def test_estimate_limit_end_to_end(digits):
    xtr, ytr, xte, yte = digits
    torch.manual_seed(0)
    m = build_model("mlp", (1, 8, 8), 10)
    train(m, xtr, ytr, epochs=30, lr=0.05)
    est = estimate_limit(m, xtr, ytr, settings=LimitSettings(steps=32, vectors=1, samples=512))
    assert 0.0 < est.s_star < 1.0 and est.epsilon > 0 and est.D == 64 * 64 + 64 * 32 + 32 * 10
    assert est.hvps == 32 and 0 < est.zero_fraction < 0.2  # blank border pixels of digits
    act = actual_limit(m, xte, yte)
    assert abs(est.s_star - act["limit"]) < 0.25  # the method's claim is tested in benchmarks/limit


def _guard_build(tmp_path, flops_keep: float, guard: str = "auto"):
    """A Build over a run folder holding a trained dense digits CNN (as the train stage leaves it)."""
    from edgeprune import config
    from edgeprune.models import arch_spec, build_arch
    from edgeprune.pipeline import Build
    from edgeprune.runfolder import RunFolder
    from edgeprune.surgery import PruningPlan, save_compact
    from edgeprune.ui import UI

    cfg = config.resolve(None, {"data_limit": 500, "method": {"flops_keep": flops_keep}, "limit": {"guard": guard}})
    b = Build(cfg, RunFolder(tmp_path), UI(quiet=True))
    a = b.arrays
    torch.manual_seed(0)
    model = build_arch(b.arch)
    train(model, a["x_train"], a["y_train"], epochs=6, lr=0.05)
    save_compact(tmp_path / "dense.pt", arch_spec("cnn", b.data.input_shape, 10), PruningPlan(method="dense"), model)
    return b


def test_build_guard_warns_beyond_the_limit_and_caches(tmp_path, capsys):
    from edgeprune.limit.guard import GUARD_FILE, run_guard
    from edgeprune.runfolder import read_json

    b = _guard_build(tmp_path, flops_keep=0.02)
    rec = run_guard(b, "fp1")
    assert 0 < rec["s_star"] < 0.98 and rec["requested_removal"] == pytest.approx(0.98) and rec["beyond"] is True
    assert "beyond the predicted one-shot pruning limit" in capsys.readouterr().err
    assert read_json(tmp_path / GUARD_FILE)["s_star"] == rec["s_star"]
    # same dense model, a modest target: the cached estimate is reused, no warning
    b.cfg["method"]["flops_keep"] = 0.9
    rec2 = run_guard(b, "fp1")
    assert rec2["s_star"] == rec["s_star"] and rec2["beyond"] is False
    assert "warning" not in capsys.readouterr().err


def test_build_guard_off_and_auto_skip(tmp_path, monkeypatch):
    from edgeprune import config
    from edgeprune.errors import ConfigError
    from edgeprune.limit import guard

    b = _guard_build(tmp_path, flops_keep=0.5, guard="off")
    assert guard.run_guard(b, "fp") is None and not (tmp_path / guard.GUARD_FILE).exists()
    b.cfg["limit"]["guard"] = "auto"
    monkeypatch.setattr(guard, "AUTO_MAX_WEIGHTS", 1000)  # the digits CNN has ~85k: "large" for this test
    rec = guard.run_guard(b, "fp")
    assert rec["s_star"] is None and "limit.guard" in rec["note"] and rec["beyond"] is None
    with pytest.raises(ConfigError, match="limit.guard"):
        config.resolve(None, {"limit": {"guard": "yes"}})


def test_limit_cli_writes_json_and_plot(tmp_path, capsys):
    import json

    from edgeprune.cli import main

    code = main(["limit", "--epochs", "3", "--steps", "8", "--vectors", "1", "--samples", "128", "--l1", "1e-4",
                 "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    rec = json.loads((tmp_path / "limit.json").read_text())
    assert f"s* = {rec['s_star']:.3f}" in out and rec["actual"]["limit"] > 0
    assert (tmp_path / "limit.png").stat().st_size > 10_000
    assert main(["limit", "--model-options", "{bad", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_report_shows_prediction_next_to_achieved(tmp_path):
    from edgeprune.report.build import _limit_block
    from edgeprune.report.html import _limit_section
    from edgeprune.runfolder import write_json

    assert _limit_block(tmp_path, {}, {}, {}) is None and _limit_section({}) == ""
    write_json(tmp_path / "limit.json", {"s_star": 0.62, "epsilon": 0.01, "seconds": 2.0, "requested_removal": 0.8,
                                         "beyond": True, "settings": {"steps": 32, "vectors": 2, "samples": 256}})
    train_rec = {"cost": {"macs": 1000, "params": 100}, "test_metric": 97.0}
    block = _limit_block(tmp_path, train_rec, {"macs": 250, "params": 40}, {"test_metric": 95.5})
    assert block["achieved"]["macs_removed"] == pytest.approx(0.75) and block["achieved"]["params_removed"] == pytest.approx(0.6)
    assert block["achieved"]["metric_drop"] == pytest.approx(1.5)
    page = _limit_section({"pruning_limit": block, "metric_name": "accuracy"})
    assert "62.0%" in page and "80.0% (beyond the predicted limit)" in page and "75.0% / 60.0%" in page
    assert "32 Lanczos steps × 2 vectors over 256 training samples" in page and "fine-tun" in page
