"""Training under torch.distributed: real 2-process gloo jobs on this CPU machine (no mocks).

* the maths: DDP with world 2 and batch b/2 per rank equals one process with batch b (same shuffle, plain
  model without batch norm): the weights after two epochs agree to float rounding; pl-gates with γ = 0
  (κ̂ only monitored) gives the same plan as one process; with γ > 0 each rank's κ̂ sees its own batch, and
  the reduced κ̂ gradient keeps every rank's gates identical;
* the pipeline: `edgeprune build --nproc 2` (torchrun) writes one valid run folder, both ranks end with the
  same plan, and the dense model equals the one-process training.
"""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch

from edgeprune import distributed as D

from .conftest import run_cli

PLG = {"epochs": 1, "kappa_every": 4, "kappa_batch": 8, "eval_samples": 0, "calib_samples": 64}
BATCH = 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    from edgeprune.data import load_dataset

    d = load_dataset("digits", seed=0, limit=256)  # 256 samples: every batch of 32 splits 16 + 16
    return d, d.normalize(d.x_train), d.y_train


def _scenarios(out: str) -> None:
    """What each rank (or the single process) computes; saved to ``out``."""
    from edgeprune.methods import FitContext, get_method
    from edgeprune.models import build_model
    from edgeprune.surgery import analyze
    from edgeprune.train import seed_everything, train

    torch.set_num_threads(1)
    d, x, y = _data()
    res = {"rank": D.rank(), "world": D.world_size()}
    seed_everything(0)
    model = build_model("mlp", d.input_shape, d.num_classes)
    hist = train(model, x, y, epochs=2, batch_size=BATCH, seed=0)
    res["dense"] = {k: v.clone() for k, v in model.state_dict().items()}
    res["loss"] = [r["loss"] for r in hist.to_list()]
    ex = torch.as_tensor(x[:1])
    graph = analyze(model, ex)
    for gamma in (0.0, 0.1):
        ctx = FitContext(x, y, x[:0], y[:0], ex, graph, "classification", 0.5, 1, 0,
                         {"epochs": 1, "batch_size": BATCH, "lr": 0.01, "weight_decay": 5e-4, "finetune_epochs": 1},
                         log=lambda m: None)
        r = get_method("pl-gates", dict(PLG, gamma=gamma)).fit(model, ctx)
        res[f"plan{gamma}"] = r.plan.keep
        res[f"weights{gamma}"] = {k: v.clone() for k, v in r.model.state_dict().items()}
        res[f"kappa{gamma}"] = r.history["kappa"]
    res["mean_of_ranks"] = D.all_reduce_mean(float(D.rank()))
    res["broadcast"] = D.broadcast_object({"from": D.rank()})
    res["shard"] = D.shard(torch.arange(7)).tolist()
    torch.save(res, out)


def _rank_main(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    assert D.init_from_env() and D.world_size() == world
    try:
        _scenarios(os.path.join(folder, f"rank{rank}.pt"))
    finally:
        D.shutdown()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    import torch.multiprocessing as mp

    folder = tmp_path_factory.mktemp("ranks")
    mp.start_processes(_rank_main, args=(2, _free_port(), str(folder)), nprocs=2, start_method="spawn")
    one = folder / "one.pt"
    _scenarios(str(one))  # this process: no process group, a world of 1
    return tuple(torch.load(p, weights_only=True) for p in (folder / "rank0.pt", folder / "rank1.pt", one))


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_ddp_world_two_equals_one_process(two_ranks):
    r0, r1, one = two_ranks
    assert (r0["world"], r1["world"], one["world"]) == (2, 2, 1)
    # every rank holds the same weights (DDP averages the gradients), and they are the one-process weights
    assert _max_diff(r0["dense"], r1["dense"]) == 0.0
    assert _max_diff(r0["dense"], one["dense"]) < 1e-5
    assert np.allclose(r0["loss"], one["loss"], rtol=1e-5)


def test_pl_gates_without_kappa_term_gives_the_one_process_plan(two_ranks):
    r0, r1, one = two_ranks
    assert r0["plan0.0"] == r1["plan0.0"] == one["plan0.0"]
    assert _max_diff(r0["weights0.0"], one["weights0.0"]) < 1e-4


def test_pl_gates_kappa_is_reduced_so_ranks_stay_identical(two_ranks):
    r0, r1, one = two_ranks
    # κ̂ is the mean of the ranks' estimates on their own batches: the same on both ranks, not the 1-process value
    assert r0["kappa0.1"] == r1["kappa0.1"]
    assert r0["kappa0.1"] != one["kappa0.1"]
    # its gradient reaches the gates outside DDP's backward; averaged, the ranks' gates and weights stay equal
    assert _max_diff(r0["weights0.1"], r1["weights0.1"]) == 0.0
    assert r0["plan0.1"] == r1["plan0.1"]


def test_collective_helpers(two_ranks):
    r0, r1, one = two_ranks
    assert r0["mean_of_ranks"] == r1["mean_of_ranks"] == 0.5 and one["mean_of_ranks"] == 0.0
    assert r0["broadcast"] == r1["broadcast"] == {"from": 0}
    # DistributedSampler's deal: padded to 8 with the first index, every second one
    assert (r0["shard"], r1["shard"], one["shard"]) == ([0, 2, 4, 6], [1, 3, 5, 0], list(range(7)))


def test_batch_that_does_not_split_is_refused(monkeypatch):
    from edgeprune.errors import ConfigError

    monkeypatch.setattr(D, "world_size", lambda: 2)
    with pytest.raises(ConfigError, match="multiple of 2"):
        D.check_batch(33)
    assert D.check_batch(64) == 32


@pytest.mark.slow  # two torchrun ranks through every stage (export, bench, report)
def test_build_nproc_2_writes_one_valid_run_folder(tmp_path):
    from edgeprune import config
    from edgeprune.pipeline import Build
    from edgeprune.runfolder import RunFolder
    from edgeprune.stages import train as train_stage
    from edgeprune.surgery import PruningPlan, load_compact
    from edgeprune.models import build_arch, example_for
    from edgeprune.ui import UI

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    args = ["--model", "mlp", "--epochs", "2", "--finetune-epochs", "1", "--formats", "onnx", "--target", "host",
            "--flops-keep", "0.5", "--method", "pl-gates", *[f"--method-option={k}={v}" for k, v in PLG.items()]]
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(scratch)  # the other rank's scratch folder must be gone afterwards
    try:
        p = run_cli("build", *args, "--output", tmp_path / "out", "--name", "two", "--nproc", "2")
    finally:
        os.environ.pop("TMPDIR") if old is None else os.environ.__setitem__("TMPDIR", old)
    assert p.returncode in (0, 3), p.stderr[-3000:]
    assert p.stdout.count("build complete") == 1  # rank 1 prints nothing
    assert [q.name for q in (tmp_path / "out").iterdir()] == ["two"]  # written once, by rank 0
    assert not list(scratch.glob("edgeprune-rank*"))
    run = tmp_path / "out" / "two"
    stages = json.loads((run / "stages.json").read_text())
    assert list(stages) == ["train", "prune", "compact", "finetune", "export", "bench", "budget", "report", "package"]
    prune = json.loads((run / "prune.json").read_text())
    dist = prune["distributed"]
    assert dist["world_size"] == 2 and dist["ranks_agreed"]
    assert dist["plan_sha256_per_rank"][0] == dist["plan_sha256_per_rank"][1]
    plan = PruningPlan.load(run / "plan.json")
    assert plan.keep
    for name in ("dense.pt", "compact.pt", "model.pt"):
        model, _, arch = load_compact(run / name, build_arch, example_for)
        assert model(example_for(arch)).shape[-1] == 10
    # the same config in one process (train stage only): the same dense weights (mlp: no batch norm)
    cfg = config.resolve(None, {"model": "mlp", "train": {"epochs": 2}})
    b = Build(cfg, RunFolder(tmp_path / "one"), UI(quiet=True))
    (tmp_path / "one").mkdir()
    train_stage.run(b)
    a = torch.load(run / "dense.pt", weights_only=True)["state_dict"]
    o = torch.load(tmp_path / "one" / "dense.pt", weights_only=True)["state_dict"]
    assert max(float((a[k] - o[k]).abs().max()) for k in a) < 1e-5
    t2 = json.loads((run / "train.json").read_text())
    assert abs(t2["test_metric"] - b.outcome["train"]["test_metric"]) < 1e-9


def test_build_nproc_2_bad_input_is_one_line_and_its_exit_code(tmp_path):
    """Bad input under --nproc 2: the documented exit code (2, 5; not torchrun's 1), one error line (not one per
    rank plus torchrun's report and the other rank's lost-peer traceback), nothing written. A bad target and
    --search are refused before any rank starts; a missing dataset is found by every rank; an impossible latency
    budget by rank 0 alone (the other rank waits for it)."""
    cases = ((["--target", "nosuch"], 2, "unknown target"), (["--search"], 2, "one process"),
             (["--dataset", str(tmp_path / "none")], 2, "not found"),
             (["--budget", "latency_p50_ms=0.001", "--limit-guard", "off"], 5, "out of reach"))
    for args, code, where in cases:
        p = run_cli("build", *args, "--output", tmp_path / "out", "--nproc", "2")
        assert p.returncode == code, (args, p.stderr[-3000:])
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("edgeprune: error:") and where in lines[0], p.stderr[-3000:]
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no half-written run


def test_without_nproc_argv_is_kept_otherwise():
    from edgeprune.cli import _without_nproc

    assert _without_nproc(["build", "--nproc", "2", "--epochs", "1", "--nproc=3"]) == ["build", "--epochs", "1"]


@pytest.mark.slow  # a serial and a pooled comparison, each exporting its models to ONNX
def test_compare_workers_pool_gives_the_serial_rows(tmp_path, capsys):
    from edgeprune.compare import main

    base = ["--dataset", "digits", "--model", "mlp", "--methods", "l1,l2", "--levels", "0.5", "--seeds", "0",
            "--epochs", "1", "--finetune-epochs", "1", "--no-latency", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "serial")]) == 0
    capsys.readouterr()
    assert main([*base[:-1], "--out", str(tmp_path / "pool"), "--workers", "2"]) == 0
    said = capsys.readouterr().out  # progress: one line per finished job, with its rows' metrics

    def rows(name):
        doc = json.loads((tmp_path / name / "results.json").read_text())
        return doc, {(r["method"], r["level"], r["seed"]): r for r in doc["rows"]}

    serial, s = rows("serial")
    pooled, p = rows("pool")
    assert set(s) == set(p) and len(s) == 2 + 2  # dense, dense+ft, and 2 methods (l2's job reuses l1's dense)
    for k in s:  # the same numbers; only the clocks differ
        assert (p[k]["metric"], p[k]["macs"], p[k]["params"], p[k]["widths"]) == \
               (s[k]["metric"], s[k]["macs"], s[k]["params"], s[k]["widths"]), k
    assert pooled["meta"]["pool"]["workers"] == 2 and "pool" not in serial["meta"]
    assert f"[2/2] seed0-l2 done (l2 0.5: {p[('l2', 0.5, 0)]['metric']:.2f})" in said, said
    assert f"dense 0: {p[('dense', 0.0, 0)]['metric']:.2f}" in said.split("seed0-l1 done")[1].splitlines()[0]
    for m in ("l1", "l2"):  # each worker's own log, for tail -f during a long study
        assert f"[1/1 {m} -50% seed 0]" in (tmp_path / "pool" / "cache" / "pool" / f"seed0-{m}" / "log.txt").read_text()
