"""The budget sets the pruning target (bench/planning.py) and build --search closes the loop (search.py):
real cost model, real digits builds, real runtimes."""

import json
import time

import pytest
import torch

from edgeprune.bench.planning import AIM, KEEP_MIN, dense_cost, keep_for, predict_dense, solve
from edgeprune.cli import main
from edgeprune.errors import OutOfReachError
from edgeprune.models import build_model
from edgeprune.search import decide, tighter_keep
from edgeprune.targets import load_target


@pytest.fixture(scope="module")
def cnn_cost():
    """The quickstart digits CNN costed on rpi4 for its preferred artifact (tflite-int8)."""
    model = build_model("cnn", (1, 8, 8))
    pred, factors, speedup = predict_dense(model, torch.zeros(1, 1, 8, 8), load_target("rpi4"), "tflite-int8")
    return pred, dense_cost(pred, factors, speedup)


def test_scaled_dense_cost_is_the_cost_models_prediction(cnn_cost):
    pred, dc = cnn_cost
    assert dc.latency_ms(1.0) == pytest.approx(pred["latency_ms"], rel=1e-6)
    assert dc.memory_mb(1.0) == pytest.approx(pred["peak_memory_mb"], rel=1e-6)
    assert dc.latency_ms(0.05) < dc.latency_ms(1.0) and dc.memory_mb(0.3) < dc.memory_mb(0.6) < dc.memory_mb(1.0)
    assert dc.latency_ms(KEEP_MIN) > dc.overhead_ms  # pruning never removes the fixed overhead


def test_derived_target_is_monotone_in_the_budget(cnn_cost):
    _, dc = cnn_cost
    dense = dc.latency_ms(1.0)
    keeps = []
    for f in (3.0, 1.2, 1.0, 0.8, 0.6, 0.45, 0.35, 0.3):  # ever tighter p50 budgets
        d = solve(dc, {"latency_p50_ms": dense * f, "peak_memory_mb": 64.0}, "tflite-int8")
        keeps.append(d.flops_keep)
        if d.flops_keep < 1.0:
            assert d.binding == "latency_p50_ms"
            assert d.predicted["latency_ms"] <= dense * f * AIM + 1e-9  # aims under the budget
            assert "keep ~" in d.sentence("rpi4") and "tflite-int8" in d.sentence("rpi4")
    assert keeps == sorted(keeps, reverse=True), keeps  # a tighter budget never keeps more MACs
    assert keeps[0] == 1.0 and keeps[-1] < 0.5 and len(set(keeps)) >= 5
    # memory and file size derive monotone too; the tightest line binds
    ks = [solve(dc, {"model_size_mb": dc.size_mb * f}, "tflite-int8").flops_keep for f in (2, 0.8, 0.5, 0.2)]
    assert ks == sorted(ks, reverse=True) and ks[-1] < ks[1] < 1.0


def test_dense_meets_says_so_with_headroom(cnn_cost):
    _, dc = cnn_cost
    d = solve(dc, {"latency_p50_ms": 10.0}, "tflite-int8")
    assert d.flops_keep == 1.0 and d.source == "dense-meets"
    assert "already meets" in d.sentence("rpi4") and "x under" in d.sentence("rpi4")


def test_keep_for_edges():
    assert keep_for(lambda k: k, 2.0) == 1.0
    assert keep_for(lambda k: k + 1.0, 0.5) is None
    assert keep_for(lambda k: k, 0.42) == pytest.approx(0.42, abs=0.006) and keep_for(lambda k: k, 0.42) <= 0.42


def test_overhead_alone_over_budget_is_out_of_reach(cnn_cost):
    _, dc = cnn_cost
    with pytest.raises(OutOfReachError, match="fixed per-operator overhead") as e:
        solve(dc, {"latency_p50_ms": dc.overhead_ms * 0.9}, "tflite-int8")
    assert e.value.exit_code == 5


def test_impossible_budget_exits_5_before_any_work(tmp_path, capsys):
    t0 = time.perf_counter()
    code = main(["build", "--budget", "latency_p50_ms=0.001", "--search", "--output", str(tmp_path / "runs"),
                 "--limit-guard", "off"])
    err = capsys.readouterr().err
    assert code == 5, err
    assert "out of reach" in err and "overhead" in err and "\n" not in err.strip()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no half-written run
    assert time.perf_counter() - t0 < 30  # no training, no rounds


def test_search_stops_at_the_first_round_that_meets_the_budget(tmp_path):
    """onnx only (fast export); a p50 budget that needs pruning but that the derived first round meets."""
    cfg = tmp_path / "edgeprune.toml"
    cfg.write_text("[bench]\nruns = 5\nwarmup = 2\nrepeats = 1\n[train]\nbatch_size = 64\n")
    out = tmp_path / "runs"
    code = main(["build", "--config", str(cfg), "--search", "--objective", "least-pruning", "--formats", "onnx",
                 "--budget", "latency_p50_ms=0.08", "--budget", "max_accuracy_drop=100", "--method", "l1",
                 "--data-limit", "400", "--epochs", "1", "--finetune-epochs", "0", "--limit-guard", "off",
                 "--output", str(out), "--name", "s", "-q"])
    run = out / "s"
    s = json.loads((run / "search.json").read_text())
    assert code == 0, s
    assert len(s["rounds"]) == 1 and s["verdict"]["status"] == "passed" and s["verdict"]["chosen_round"] == 1
    r = s["rounds"][0]
    assert r["target_keep"] < 0.9 and r["achieved_keep"] < 0.95  # it did prune: the budget needed it
    assert r["artifact"] == "onnx" and r["predicted_ms"] <= 0.08 and r["host_ms"] > 0
    assert s["derivation"]["source"] == "derived" and s["derivation"]["artifact"] == "onnx"
    rep = json.loads((run / "report.json").read_text())
    assert rep["search"]["rounds"][0]["round"] == 1
    html = (run / "report.html").read_text()
    assert "Search rounds: accuracy vs predicted target latency" in html and "Pruning target" in html


def test_api_search_true_runs_the_search(tmp_path):
    """edgeprune.build(search=True) is build --search (it was silently a plain build)."""
    import edgeprune

    res = edgeprune.build("cnn", dataset="digits", target="rpi4", method="l1", search=True, output=tmp_path / "runs",
                          name="s", formats=["onnx"], budget={"latency_p50_ms": 0.08, "max_accuracy_drop": 100},
                          data_limit=400, epochs=1, finetune_epochs=0, runs=5, warmup=2, repeats=1,
                          limit={"guard": "off"})
    s = json.loads((res.run_dir / "search.json").read_text())
    assert res.exit_code == 0 and s["verdict"]["status"] == "passed" and s["rounds"][0]["target_keep"] < 0.9


def _rec(**kw):
    base = {"round": 1, "target_keep": 0.5, "achieved_keep": 0.5, "artifact": "tflite-int8", "predicted_ms": 2.0,
            "predicted_overhead_ms": 0.2, "metric": 90.0, "dense_metric": 91.0, "metric_name": "accuracy",
            "passed": False, "failed": ["latency_p50_ms"],
            "lines": [{"name": "latency_p50_ms", "value": 2.0, "budget": 1.0, "passed": False}]}
    return {**base, **kw}


def test_next_round_tightens_from_the_cost_split():
    k, _ = tighter_keep(_rec())
    # fixed 10% of 2 ms: (1.0 * 0.9 / 2.0 - 0.1) / 0.9 = 0.389 of the achieved 0.5
    assert k == pytest.approx(0.5 * (0.45 - 0.1) / 0.9, abs=1e-3)
    k, why = tighter_keep(_rec(predicted_overhead_ms=1.5))
    assert k is None and "overhead" in why
    # accuracy fails where the latency line has no room left: out of reach, the accuracy line's own value named
    tight = [{"name": "latency_p50_ms", "value": 0.99, "budget": 1.0, "passed": True},
             {"name": "max_accuracy_drop", "value": 2.8, "budget": 2.0, "passed": False}]
    action, _, sentence = decide("least-pruning", [_rec(failed=["max_accuracy_drop"], lines=tight, predicted_ms=0.99)],
                                 _NoRun(), 0.5)
    assert action == "out-of-reach" and "accuracy floor breaks first" in sentence and "2.80 points" in sentence
    # ... with room left under the latency line (0.69 of 0.8 ms): the next round prunes less, once
    roomy = [{"name": "latency_p50_ms", "value": 0.69, "budget": 0.8, "passed": True}, tight[1]]
    rec = _rec(target_keep=0.46, achieved_keep=0.46, failed=["max_accuracy_drop"], lines=roomy, predicted_ms=0.69,
               predicted_overhead_ms=0.02)
    action, k, _ = decide("least-pruning", [rec], _NoRun(), 0.48)
    # (0.8 x 0.97 / 0.69 - 0.029) / 0.971 x 0.46 = 0.519: more MACs, still under the budget
    assert action == "next" and k == pytest.approx(0.519, abs=0.002)
    # a method that lands under its request (asked 52%, got 48%) is asked proportionally more
    _, k2, _ = decide("least-pruning", [dict(rec, target_keep=0.52, achieved_keep=0.48)], _NoRun(), 0.48)
    assert k2 > 0.52 + 0.02
    assert decide("least-pruning", [_rec(round=0, achieved_keep=0.6, failed=["max_accuracy_drop"], lines=tight), rec],
                  _NoRun(), 0.48)[0] == "out-of-reach"  # a looser round already failed: no loop


def test_fastest_keeps_the_last_passing_round():
    recs = [_rec(passed=True, failed=[]), _rec(round=2, target_keep=0.3, achieved_keep=0.3, failed=["max_accuracy_drop"])]
    action, _, sentence = decide("fastest", recs, _NoRun(), 0.5)
    assert action == "done" and "round is 1" in sentence
    action, k, _ = decide("fastest", recs[:1], _NoRun(), 0.5)
    assert action == "next" and k == pytest.approx(0.3)
    # a pass above an accuracy failure: bisect between them, never below the failure
    recs = [_rec(target_keep=0.45, achieved_keep=0.45, failed=["max_accuracy_drop"]),
            _rec(round=2, target_keep=0.8, achieved_keep=0.8, passed=True, failed=[])]
    action, k, _ = decide("fastest", recs, _NoRun(), 1.0)
    assert action == "next" and k == pytest.approx(0.625)


class _NoRun:
    class run:  # noqa: N801 - a stand-in for Build.run with no limit.json
        from pathlib import Path

        path = Path("/nonexistent-run-folder")


def test_budget_stage_judges_the_artifact_the_export_chose():
    from edgeprune.stages.budget import choose_artifact

    arts = {f: {"ok": True} for f in ("tflite-int8", "tflite", "onnx", "onnx-int8")}
    t = load_target("rpi4")
    assert choose_artifact(t, arts) == "tflite-int8"
    slower = {"tflite": {"prefer": "tflite", "reason": "tflite-int8 is NOT faster"}}
    assert choose_artifact(t, arts, slower) == "tflite"


def test_accuracy_below_and_latency_above_is_out_of_reach_not_a_loop():
    """The show-run's rounds (benchmarks/budget/search-3.json before this rule): accuracy fails at 46-48% of the
    MACs, latency at 56%; tightening would rebuild the 48% round: out of reach instead."""
    lat = lambda v: {"name": "latency_p50_ms", "value": v, "budget": 0.8, "passed": v <= 0.8}  # noqa: E731
    acc = lambda v: {"name": "max_accuracy_drop", "value": v, "budget": 2.0, "passed": v <= 2.0}  # noqa: E731
    recs = [_rec(round=1, target_keep=0.48, achieved_keep=0.46, predicted_ms=0.69, predicted_overhead_ms=0.016,
                 failed=["max_accuracy_drop"], lines=[lat(0.69), acc(2.79)]),
            _rec(round=2, target_keep=0.54, achieved_keep=0.48, predicted_ms=0.724, predicted_overhead_ms=0.016,
                 failed=["max_accuracy_drop"], lines=[lat(0.724), acc(2.45)]),
            _rec(round=3, target_keep=0.57, achieved_keep=0.56, predicted_ms=0.843, predicted_overhead_ms=0.016,
                 failed=["latency_p50_ms"], lines=[lat(0.843), acc(1.85)])]
    assert decide("least-pruning", recs[:1], _NoRun(), 0.48)[0] == "next"
    action, _, sentence = decide("least-pruning", recs, _NoRun(), 0.48)
    assert action == "out-of-reach" and "no pruning level this method reaches meets both" in sentence
    assert "48%" in sentence and "56%" in sentence
