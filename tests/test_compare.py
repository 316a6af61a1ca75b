"""The benchmark harness: `--quick` end to end on digits, plus its small pure helpers."""

import csv
import json
import math

import pytest

from edgeprune import compare
from edgeprune.compare import (
    QUICK, CompareConfig, available_methods, epoch_plan, expand_methods, main, markdown_table, summarize,
    time_to_target, tp_methods, widths_str,
)
from edgeprune.errors import ConfigError
from edgeprune.methods import list_methods


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare-quick")
    code = main(["--quick", "--out", str(out), "--quiet"])
    return code, out


@pytest.mark.slow
def test_quick_mode_runs_every_method_at_every_level(quick_run):
    code, out = quick_run
    for name in compare.RESULT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    doc = json.loads((out / "results.json").read_text())
    rows, summary = doc["rows"], doc["summary"]
    failed = [(r["method"], r["level"], r["error"]) for r in rows if r.get("error")]
    assert code == 0 and not failed, failed

    expected = set(list_methods())  # every registered method (Torch-Pruning's included), picked up automatically
    assert expected == set(available_methods()) and set(tp_methods()) <= expected
    levels = QUICK["levels"]
    by_key = {(s["method"], round(s["level"], 6)): s for s in summary}
    for m in expected:
        for lv in levels:
            s = by_key.get((m, lv))
            assert s is not None and s["n"] == 1, (m, lv)
            # MACs counted on the compact model: within 5 percentage points of the request, never above it
            assert abs(s["macs_kept"] - (1 - lv)) <= 0.05, (m, lv, s["macs_kept"])
            assert s["macs_kept"] <= (1 - lv) + 1e-9, (m, lv, s["macs_kept"])
            assert s["latency_ms"] > 0, (m, lv)
            assert s["metric"] > 100 / 10 + 5, (m, lv, s["metric"])  # digits: well above 10% chance
            assert s["prune_s"] >= 0 and s["train_s"] > 0

    # one total epoch budget: a method's own training before pruning counts against its fine-tuning
    budget = QUICK["method_epochs"] + QUICK["finetune_epochs"]
    for r in rows:
        if r["method"] != "dense":
            scratch = QUICK["epochs"] if (r.get("trains_from_scratch") or r.get("from_scratch")) else 0
            assert r["own_epochs"] + r["finetune_epochs"] == budget + scratch, (r["method"], r["own_epochs"],
                                                                                r["finetune_epochs"])
    assert {r["own_epochs"] for r in rows if r["method"] in ("pl-gates", "tp-groupnorm")} == {QUICK["method_epochs"]}
    assert {r["own_epochs"] for r in rows if r["method"] in ("l1", "tp-l1")} == {0}
    # every row has a validation curve over time that ends with its last fine-tuning epoch
    for r in rows:
        c = r["curve"]
        assert c and all(b[0] >= a[0] and b[2] == a[2] + 1 for a, b in zip(c, c[1:])), (r["method"], c)
        assert c[-1][2] == (QUICK["epochs"] if r["method"] == "dense" else QUICK["epochs"] + budget), (r["method"], c)

    dense = [r for r in rows if r["method"] == "dense"]
    assert len(dense) == 1 and dense[0]["metric"] > 80 and dense[0]["latency_ms"] > 0
    ft = [r for r in rows if r["method"] == compare.DENSE_FT]
    assert len(ft) == 1 and ft[0]["macs"] == dense[0]["macs"] and ft[0]["metric"] > 80
    ok = [r for r in rows if r["level"] > 0]
    assert all(r["macs_check"] == "ok" for r in rows), [(r["method"], r["macs_check"]) for r in rows]
    assert all(r["params"] < r["dense_params"] and r["macs"] < r["dense_macs"] for r in ok)
    diffs = [r["onnx_max_abs_diff"] for r in rows if r["onnx_max_abs_diff"] is not None]  # one per architecture
    assert diffs and all(d < 1e-3 for d in diffs)
    assert len({r["arch"] for r in rows}) == len(diffs)

    # the Markdown table has one line per (method, level), the CSV one row per (method, level, seed)
    table = (out / "table.md").read_text().splitlines()
    for m in expected:
        for lv in levels:
            assert sum(1 for line in table if line.startswith(f"| {m} | {lv:.0%} |")) == 1, (m, lv)
    with (out / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(expected) * len(levels) + 2  # + dense, dense+ft
    readme = (out / "README.md").read_text()
    assert "--quick" in readme and "Model name" not in readme and "torch-pruning" in readme


def test_method_names_and_groups():
    assert [s.label for s in expand_methods("tp")] == tp_methods() == [
        "tp-groupnorm", "tp-l1", "tp-l2", "tp-random", "tp-taylor"]
    assert not {s.label for s in expand_methods("edgeprune")} & set(tp_methods())
    assert [s.label for s in expand_methods("all")] == available_methods()
    s = expand_methods("l1@8,tp-l1@16")
    assert [(x.name, x.width_multiple, x.kind) for x in s] == [("l1", 8, "edgeprune"), ("tp-l1", 16, "torch-pruning")]
    with pytest.raises(ConfigError, match="unknown method"):
        expand_methods("nope")
    with pytest.raises(ConfigError, match="width multiple"):
        expand_methods("l1@x")


def test_method_options_in_specs():
    s = expand_methods("pl-gates[gamma=0,kappa_every=40]@8,l1,pl-gates")
    assert [x.label for x in s] == ["pl-gates[gamma=0,kappa_every=40]@8", "l1", "pl-gates"]
    assert dict(s[0].options) == {"gamma": 0, "kappa_every": 40} and s[0].width_multiple == 8 and s[0].name == "pl-gates"
    assert s[2].options == ()
    with pytest.raises(ConfigError, match="no option"):
        expand_methods("pl-gates[nonsense=1]")
    # options go through the method's own options class, Torch-Pruning's peers included
    with pytest.raises(ConfigError, match="no option.*'p'"):
        expand_methods("tp-l1[p=1]")
    t = expand_methods("tp-taylor[samples=64],tp-groupnorm[reg=0.001,epochs=2]")
    assert dict(t[0].options) == {"samples": 64} and dict(t[1].options) == {"reg": 0.001, "epochs": 2}
    with pytest.raises(ConfigError, match="samples"):
        expand_methods("tp-taylor[samples=0]")
    with pytest.raises(ConfigError, match="key=value"):
        expand_methods("pl-gates[gamma]")


def test_epoch_plan_gives_every_method_the_same_total():
    cfg = CompareConfig(epochs=3, method_epochs=1, finetune_epochs=1)
    plans = {m: epoch_plan(expand_methods(m)[0], cfg) for m in
             ("l1", "tp-taylor", "tp-groupnorm", "pl-gates", "pl-gates[epochs=2]", "pl-gates[from_scratch=true,epochs=4]")}
    assert plans["l1"] == {"own_epochs": 0, "finetune_epochs": 2, "from_scratch": False}
    assert plans["tp-taylor"]["finetune_epochs"] == 2
    assert plans["tp-groupnorm"] == {"own_epochs": 1, "finetune_epochs": 1, "from_scratch": False}
    assert epoch_plan(expand_methods("tp-groupnorm[epochs=2]")[0], cfg)["own_epochs"] == 2
    assert plans["pl-gates"] == {"own_epochs": 1, "finetune_epochs": 1, "from_scratch": False}
    assert plans["pl-gates[epochs=2]"] == {"own_epochs": 2, "finetune_epochs": 0, "from_scratch": False}
    # from scratch: the dense phase's 3 epochs are its budget too (3 + 2 = 4 own + 1 FT)
    assert plans["pl-gates[from_scratch=true,epochs=4]"] == {"own_epochs": 4, "finetune_epochs": 1, "from_scratch": True}
    legacy = CompareConfig(epochs=3, method_epochs=1, finetune_epochs=1, epoch_budget="equal-finetune")
    assert epoch_plan(expand_methods("l1")[0], legacy)["finetune_epochs"] == 1
    assert epoch_plan(expand_methods("pl-gates")[0], legacy) == {"own_epochs": 1, "finetune_epochs": 1,
                                                                 "from_scratch": False}


def test_time_to_target():
    curve = [[10.0, 50.0, 3], [12.5, 84.9, 4], [15.0, 85.0, 5], [17.0, 90.0, 6]]
    assert time_to_target(curve, 85.0) == 15.0 and time_to_target(curve, 85.0, 2) == 5
    assert time_to_target(curve, 95.0) is None
    assert time_to_target(curve, None) is None and time_to_target([], 1.0) is None


def test_bad_arguments_exit_2_before_any_training(tmp_path, capsys):
    assert main(["--levels", "1.5", "--methods", "l1", "--out", str(tmp_path), "--no-latency"]) == 2
    assert "level" in capsys.readouterr().err
    assert main(["--methods", "magic", "--out", str(tmp_path)]) == 2
    assert main(["--methods", "l1", "--method-options", '{"tp-taylor": {"bogus": 1}}', "--out", str(tmp_path)]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["--methods", "l1", "--finished-only", "--out", str(tmp_path)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["--methods", "l1", "--finished-only", "--resume", "--out", str(tmp_path / "none")]) == 2
    assert "rows of an earlier run" in capsys.readouterr().err and not (tmp_path / "none").exists()
    assert not (tmp_path / "results.json").exists()
    # a missing dataset fails before the results folder gets anything (no cache/ left behind)
    out = tmp_path / "fm"
    assert main(["--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "nowhere"), "--methods", "l1",
                 "--out", str(out), "--no-latency"]) == 2
    assert not out.exists()


def test_summary_table_and_widths_helpers():
    assert widths_str([11, 11, 11, 22, 45, 45, 10]) == "11x3 22 45x2 10"
    rows = [
        {"method": "dense", "level": 0.0, "kind": "dense", "metric": 90.0, "macs_kept": 1.0, "params_kept": 1.0,
         "latency_ms": 0.2, "speedup": 1.0, "prune_s": 0.0, "train_s": 10.0, "widths": "16x5"},
        *[{"method": "l1", "level": 0.5, "kind": "edgeprune", "metric": m, "metric_before_ft": 10.0,
           "macs_kept": 0.48, "params_kept": 0.49, "latency_ms": 0.15, "speedup": 1.3, "prune_s": 0.1,
           "train_s": 5.0, "widths": "11x5"} for m in (80.0, 82.0)],
        {"method": "l1", "level": 0.5, "kind": "edgeprune", "error": "RuntimeError: boom"},
    ]
    s = summarize(rows)
    l1 = [x for x in s if x["method"] == "l1"][0]
    assert l1["n"] == 2 and l1["failed"] == 1 and l1["metric"] == 81.0 and math.isclose(l1["metric_std"], math.sqrt(2))
    md = markdown_table(s, "accuracy")
    assert "| l1 | 50% | 81.00 ± 1.41 |" in md and "(1 failed)" in md and "| dense | dense | 90.00 |" in md


def test_no_dense_ft_skips_the_reference_row_and_a_resume_adds_it(tmp_path):
    out = tmp_path / "cmp"
    args = ["--dataset", "digits", "--model", "cnn", "--methods", "l1", "--levels", "0.5", "--seeds", "0",
            "--epochs", "1", "--finetune-epochs", "1", "--method-epochs", "0", "--no-latency", "--out", str(out),
            "--quiet"]
    assert main(args + ["--no-dense-ft"]) == 0
    methods = [r["method"] for r in json.loads((out / "results.json").read_text())["rows"]]
    assert sorted(methods) == ["dense", "l1"]
    assert main(args + ["--resume"]) == 0  # the same study later, with the reference row: only that row is trained
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert sorted(r["method"] for r in rows) == ["dense", compare.DENSE_FT, "l1"]


def test_resume_restores_committed_rows_and_skips_a_dense_phase_no_row_needs(tmp_path):
    """The cache is not committed: a resumed study restores the finished rows of results.json; a dense checkpoint
    that is gone is retrained only when a row still to run starts from the dense weights."""
    import shutil

    out = tmp_path / "cmp"
    base = ["--dataset", "digits", "--model", "cnn", "--levels", "0.5", "--seeds", "0", "--epochs", "1",
            "--finetune-epochs", "1", "--method-epochs", "1", "--no-latency", "--no-dense-ft", "--out", str(out),
            "--quiet"]
    assert main(base + ["--methods", "l1"]) == 0
    first = {r["method"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    shutil.rmtree(out / "cache")

    scratch = "pl-gates[from_scratch=true,epochs=1,kappa_every=0]"
    assert main(base + ["--methods", f"l1,{scratch}", "--resume"]) == 0
    rows = {r["method"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == {"dense", "l1", scratch}
    for m in ("dense", "l1"):  # restored as they were, not recomputed
        assert rows[m].get("restored") and rows[m]["metric"] == first[m]["metric"], m
        assert rows[m]["train_s"] == first[m]["train_s"], m
    assert not rows[scratch].get("restored") and rows[scratch]["metric"] > 10
    opts = rows[scratch]["details"]["options"]  # every option as resolved when the row ran, defaults included
    assert opts["from_scratch"] is True and opts["kappa_every"] == 0 and opts["kappa_estimator"] in ("kernel", "loss")

    # a committed row that ran with other options (a default changed since) is recomputed, not restored
    doc = json.loads((out / "results.json").read_text())
    for r in doc["rows"]:
        if r["method"] == scratch:
            r["details"]["options"]["gate_init"] = 99.0
    (out / "results.json").write_text(json.dumps(doc))
    shutil.rmtree(out / "cache")
    assert main(base + ["--methods", f"l1,{scratch}", "--resume"]) == 0
    rows = {r["method"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["l1"].get("restored") and not rows[scratch].get("restored")
    assert rows[scratch]["details"]["options"]["gate_init"] == 3.0
    assert "restored from the committed `results.json`" in (out / "README.md").read_text()

    shutil.rmtree(out / "cache")  # now a method that starts from the dense weights: the dense phase runs again
    assert main(base + ["--methods", "l1,tp-l1", "--resume"]) == 0
    rows = {r["method"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert not rows["dense"].get("restored") and rows["l1"].get("restored") and not rows["tp-l1"].get("restored")

    shutil.rmtree(out / "cache")  # another fine-tuning budget: the committed rows do not match, nothing is restored
    assert base[10] == "--finetune-epochs"
    assert main(base[:11] + ["2"] + base[12:] + ["--methods", "l1", "--resume"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert not any(r.get("restored") for r in rows)


def test_pool_resume_restores_committed_rows_in_every_job(tmp_path):
    """--workers 2 on a study whose cache is gone: the jobs restore the committed rows and train no dense model that
    only from-scratch rows remain for."""
    import shutil

    out = tmp_path / "cmp"
    base = ["--dataset", "digits", "--model", "cnn", "--levels", "0.5", "--seeds", "0,1", "--epochs", "1",
            "--finetune-epochs", "1", "--method-epochs", "1", "--no-latency", "--no-dense-ft", "--out", str(out),
            "--quiet"]
    assert main(base + ["--methods", "l1"]) == 0
    first = {(r["method"], r["seed"]): r for r in json.loads((out / "results.json").read_text())["rows"]}
    shutil.rmtree(out / "cache")
    scratch = "pl-gates[from_scratch=true,epochs=1,kappa_every=0]"
    assert main(base + ["--methods", f"l1,{scratch}", "--resume", "--workers", "2"]) == 0
    rows = {(r["method"], r["seed"]): r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == set(first) | {(scratch, 0), (scratch, 1)}
    for k, r in first.items():
        assert rows[k].get("restored") and rows[k]["metric"] == r["metric"], k
    assert not list((out / "cache").glob("**/dense-seed*.pt"))  # no dense phase ran
    assert all(rows[(scratch, s)]["metric"] > 10 for s in (0, 1))

    # the first method's rows are all restored but a later method needs the dense weights: the seed's first job
    # trains the dense model once and the later job starts from its checkpoint (no second dense phase)
    shutil.rmtree(out / "cache")
    assert main(base + ["--methods", "l1,tp-l1", "--resume", "--workers", "2"]) == 0
    rows = {(r["method"], r["seed"]): r for r in json.loads((out / "results.json").read_text())["rows"]}
    pool = out / "cache" / "pool"
    for s in (0, 1):
        assert rows[("l1", s)].get("restored") and not rows[("tp-l1", s)].get("restored")
        assert not rows[("dense", s)].get("restored") and (pool / f"seed{s}-l1" / "cache" / f"dense-seed{s}.pt").is_file()
        lines = (pool / f"seed{s}-tp-l1" / "cache" / "rows.jsonl").read_text().splitlines()
        assert sum(json.loads(x)["method"] == "dense" for x in lines) == 1  # the first job's row, not its own


def test_finished_only_gathers_the_rows_of_a_pool_run_cut_off_before_its_gather(tmp_path):
    """A `--workers` run stopped before its own gather leaves its finished rows in the job folders only;
    `--resume --finished-only` must tabulate them (it used to find no rows and exit 2)."""
    import shutil

    out = tmp_path / "cmp"
    base = ["--dataset", "digits", "--model", "cnn", "--levels", "0.5", "--seeds", "0,1", "--epochs", "1",
            "--finetune-epochs", "1", "--method-epochs", "1", "--no-latency", "--no-dense-ft", "--out", str(out),
            "--quiet", "--methods", "l1,tp-l1"]
    assert main(base + ["--workers", "2"]) == 0
    full = {(r["method"], r["seed"]): r["metric"] for r in json.loads((out / "results.json").read_text())["rows"]}
    assert len(full) == 6
    # the state a run killed after its jobs but before the gather leaves: no gathered rows, no outputs
    for f in ["rows.jsonl"] + [p.name for p in (out / "cache").glob("dense-seed*.pt")]:
        (out / "cache" / f).unlink()
    for name in compare.RESULT_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "cache" / "pool" / "seed1-tp-l1")  # and one job that never finished
    assert main(base + ["--resume", "--finished-only"]) == 0
    rows = {(r["method"], r["seed"]): r["metric"] for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows == {k: v for k, v in full.items() if k != ("tp-l1", 1)}


def test_pool_queues_a_seeds_jobs_as_soon_as_its_dense_phase_ends():
    """No barrier between seeds: seed 1's first job can only finish after seed 0's follow-up job has run, which
    a pool that waits for every seed's first job before submitting the rest never does (it would time out)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from edgeprune.compare.pool import run_in_phases

    followup_ran = threading.Event()

    def first(seed):
        if seed == 1:  # a long dense phase: it ends only once seed 0's other job has started and finished
            return ("first", seed, followup_ran.wait(timeout=10))
        return ("first", seed, True)

    def other(seed):
        followup_ran.set()
        return ("other", seed, True)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = run_in_phases(pool, {0: (first, 0), 1: (first, 1)}, lambda s: [(other, s)])
    assert all(ok for _, _, ok in results), results
    assert sorted(results) == [("first", 0, True), ("first", 1, True), ("other", 0, True), ("other", 1, True)]


def test_every_training_phase_logs_one_line_per_epoch(tmp_path):
    """Hours-long studies must not run silent: the dense phase, the dense reference and each row's fine-tuning
    report each finished epoch with its validation metric."""
    from edgeprune.compare import run_compare

    cfg = CompareConfig(dataset="digits", model="cnn", levels=[0.5], methods=["l1"], seeds=[0], epochs=2,
                        finetune_epochs=1, method_epochs=0, latency=False, out=str(tmp_path / "cmp"))
    lines: list[str] = []
    run_compare(cfg, log=lines.append)
    for prefix, n in (("[dense seed 0] epoch", 2), (f"[{compare.DENSE_FT} seed 0] epoch", 1)):
        got = [s for s in lines if s.startswith(prefix)]
        assert len(got) == n and all(", val " in s and s.endswith("s") for s in got), (prefix, lines)
    ft = [s for s in lines if "l1" in s and "fine-tune epoch 1/1: loss" in s]
    assert len(ft) == 1, lines


def test_a_second_run_on_a_busy_study_folder_exits_2_and_names_the_holder(tmp_path, capsys):
    """Two runs in one study folder would interleave rows, checkpoints and logs: the second is refused at once."""
    from edgeprune.runfolder import RunFolder

    out = tmp_path / "study"
    args = ["--dataset", "digits", "--model", "cnn", "--methods", "l1", "--levels", "0.5", "--seeds", "0",
            "--epochs", "1", "--no-latency", "--out", str(out), "--quiet", "--resume"]
    with RunFolder(out / "cache").lock(timeout=0):
        assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "study folder" in err and "in use by pid" in err and "--out" in err
    assert not (out / "results.json").exists()
    assert main(args) == 0 and (out / "results.json").is_file()  # released: the same command runs


def test_pool_workers_end_when_the_process_that_started_them_is_killed(tmp_path):
    """A killed `compare --workers` must not leave workers finishing their queued jobs into the study folder."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from multiprocessing import get_context\n"
        "from edgeprune.compare.pool import _exit_with_parent\n"
        "if __name__ == '__main__':\n"
        "    with ProcessPoolExecutor(2, mp_context=get_context('spawn'), initializer=_exit_with_parent) as pool:\n"
        "        futs = [pool.submit(time.sleep, 120) for _ in range(4)]\n"
        "        while len(pool._processes) < 2: time.sleep(0.05)\n"
        "        time.sleep(1.0)\n"  # let both workers run their initializer
        "        print(' '.join(str(p) for p in pool._processes), flush=True)\n"
        "        time.sleep(120)\n"
    )
    (tmp_path / "pool_parent.py").write_text(script)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "pool_parent.py")], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
        for pid in pids:
            os.kill(pid, 0)  # alive while the parent is
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        alive = list(pids)
        while alive and time.monotonic() < deadline:  # poll up to 30 s (they end within a second)
            alive = [pid for pid in alive if _running(pid)]
            time.sleep(0.1)
        assert not alive, f"pool workers {alive} outlived the killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its new parent to reap it."""
    import os
    from pathlib import Path

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def test_training_layout_is_channels_last_only_for_simd_aligned_convolutions():
    """Channels-last training with a channel count that is not a multiple of 8 corrupted the heap in oneDNN's 1x1
    strided backward-weights kernel on an AVX2 EPYC host (`--quick` aborted in complexity-aware's fine-tune at 75%):
    pruned odd widths train in the default layout, aligned ones (and an image stem) keep the fast layout."""
    import torch
    from torch import nn

    from edgeprune.train import channels_last_is_safe, training_layout

    aligned = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 32, 1, stride=2), nn.Conv2d(32, 32, 3, groups=32))
    odd = nn.Sequential(nn.Conv2d(1, 16, 3), nn.Conv2d(16, 5, 3), nn.Conv2d(5, 11, 1, stride=2))
    assert channels_last_is_safe(aligned) and not channels_last_is_safe(odd)
    for model, inside in ((aligned, torch.channels_last), (odd, torch.contiguous_format)):
        with training_layout(model):
            assert all(p.is_contiguous(memory_format=inside) for p in model.parameters() if p.dim() == 4)
        assert all(p.is_contiguous() for p in model.parameters())
    # the case that aborted, trained in the layout chosen for it
    torch.manual_seed(0)
    with training_layout(odd):
        for _ in range(3):
            odd(torch.randn(64, 1, 12, 12)).sum().backward()
