"""``edgeprune compare --workers N``: the (method, seed) runs of the comparison over a process pool.

A standard :class:`concurrent.futures.ProcessPoolExecutor` (spawned processes, each with the config's torch
threads). The harness itself is unchanged: each job is :func:`~edgeprune.compare.harness.run_compare` on one
seed and one method, without latency, in its own folder under ``<out>/cache/pool/``; then the finished rows
and dense checkpoints are gathered into ``<out>/cache/`` and one last ``run_compare(..., resume=True)`` in
this process reuses every row and measures latency alone (timings are not taken while workers compete).

1. per seed, the first method's job trains the dense model (and the dense+ft row);
2. every other (method, seed) job starts from that seed's dense checkpoint (copied into its folder), queued as
   soon as that seed's first job ends (:func:`run_in_phases`: no barrier waiting for the other seeds);
3. gather, then the resumed run tabulates and times.

A worker ends as soon as this process does (killed or interrupted: :func:`_exit_with_parent`), and the study
folder is locked while a run uses it (a second run on it exits 2 and names the holder).

Progress: one line per finished job (its rows' metrics, jobs done, elapsed time) in this process; each job's
own log in ``<folder>/log.txt``.

With ``--resume`` and a committed ``<out>/results.json`` every job restores its finished rows (the cache is not
committed); a seed whose dense weights no remaining job needs (from-scratch methods) trains no dense model.

The rows equal the serial run's: every job seeds itself exactly as the serial loop does
(``seed_everything(seed)`` before each step); only the wall-clock fields differ.
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

from .config import DENSE_FT, CompareConfig, expand_methods
from .harness import run_compare
from .restore import needs_dense_weights, restore_rows


def _exit_with_parent() -> None:
    """Worker initializer: end this worker the moment the process that started the pool is gone (killed,
    interrupted). A pool worker otherwise finishes its job and the ones already queued to it, writing into the
    study folder while a rerun works there too."""
    import multiprocessing
    import os
    import threading
    from multiprocessing.connection import wait as wait_for

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait_for([parent.sentinel])
        os._exit(70)  # no cleanup: the job's finished rows are already on disk, the unfinished one is redone

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _job(cfg: CompareConfig) -> str:
    """One job in a worker process; returns its folder. A row that fails is recorded (with ``error``) as in the
    serial run, and the resumed run retries it. Its log goes to ``<folder>/log.txt`` (``tail -f`` it)."""
    log_file = Path(cfg.out) / "log.txt"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a", buffering=1) as fh:
        run_compare(cfg, log=lambda s: fh.write(f"{time.strftime('%H:%M:%S')} {s}\n"))
    return cfg.out


def _done_line(folder: Path, n: int, total: int, t0: float, own_dense: bool) -> str:
    """One progress line for a finished job: its rows' metrics (the dense ones only where this job trained them,
    ``own_dense``), the jobs done, the elapsed time."""
    rows = [r for r in _rows(folder) if own_dense or r["method"] not in ("dense", DENSE_FT)]
    got = ", ".join(f"{r['method']} {r['level']:g}: {r['metric']:.2f}" if not r.get("error") else
                    f"{r['method']} {r['level']:g}: failed" for r in rows) or "rows restored, nothing to run"
    return f"pool: [{n}/{total}] {folder.name} done ({got}); {time.perf_counter() - t0:.0f} s elapsed"


def _rows(folder: Path) -> list[dict]:
    f = folder / "cache" / "rows.jsonl"
    out = []
    for line in (f.read_text().splitlines() if f.is_file() else []):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def run_compare_pool(cfg: CompareConfig, workers: int, log: Callable[[str], None] = print) -> dict:
    """:func:`run_compare` with its (method, seed) jobs spread over ``workers`` processes (1: the serial run)."""
    if cfg.finished_only:  # a pool run cut off before its gather left its finished rows in the job folders
        n = gather(cfg)
        if n:
            log(f"pool: {n} finished row(s) gathered from {Path(cfg.out) / 'cache' / 'pool'}")
        return run_compare(cfg, log)
    if workers <= 1:
        return run_compare(cfg, log)
    specs = expand_methods(cfg.methods)
    root = Path(cfg.out) / "cache" / "pool"
    if root.exists() and not cfg.resume:
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def job(seed: int, label: str, folder: Path) -> CompareConfig:
        return replace(cfg, seeds=[seed], methods=[label], latency=False, out=str(folder), resume=True)

    first = {s: root / f"seed{s}-{_safe(specs[0].label)}" for s in cfg.seeds}
    committed = Path(cfg.out) / "results.json"  # every job restores the committed rows it would otherwise redo
    blob = json.loads(committed.read_text()) if cfg.resume and committed.is_file() else None
    restorable: dict[str, dict] = {}
    if blob is not None:
        restore_rows(committed, cfg, specs, cfg.fingerprint(*cfg.ROW_KEYS), restorable)

    def dense_ckpt(s: int) -> Path:
        return first[s] / "cache" / f"dense-seed{s}.pt"

    def prepare(folder: Path, drop_dense_of: int | None = None) -> None:
        (folder / "cache").mkdir(parents=True, exist_ok=True)
        if blob is not None and not (folder / "results.json").is_file():
            rows = [r for r in blob.get("rows", [])  # drop_dense_of: this seed's first job trains its dense model
                    if not (r.get("method") == "dense" and r.get("seed") == drop_dense_of)]
            (folder / "results.json").write_text(json.dumps({**blob, "rows": rows}))

    for s in cfg.seeds:  # the dense phase is decided per seed over every method of the run, not per job
        prepare(first[s], s if not dense_ckpt(s).is_file() and needs_dense_weights(specs, cfg, restorable, s) else None)

    def followups(s: int) -> list[tuple]:
        """Seed ``s``'s other jobs, each given the dense rows and checkpoint its first job left."""
        dense_rows = [r for r in _rows(first[s]) if r["method"] in ("dense", DENSE_FT)]
        jobs = []
        for spec in specs[1:]:
            folder = root / f"seed{s}-{_safe(spec.label)}"
            prepare(folder)
            if dense_ckpt(s).is_file():  # absent: no job needs the dense weights
                shutil.copy2(dense_ckpt(s), folder / "cache" / dense_ckpt(s).name)
            have = {(r["method"], r["level"]) for r in _rows(folder)}
            with (folder / "cache" / "rows.jsonl").open("a") as fh:
                for r in dense_rows:
                    if (r["method"], r["level"]) not in have:
                        fh.write(json.dumps(r) + "\n")
            jobs.append((_job, job(s, spec.label, folder)))
        return jobs

    ctx = get_context("spawn")  # a forked torch can deadlock in its thread pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_exit_with_parent) as pool:
        total = len(cfg.seeds) * len(specs)
        log(f"pool: {workers} workers, {total} (method, seed) jobs; dense models of {len(cfg.seeds)} seed(s) with "
            f"{specs[0].label}, each seed's {len(specs) - 1} other job(s) queued as soon as its dense model is ready; "
            f"each job logs to {root}/<seed>-<method>/log.txt")
        run_in_phases(pool, {s: (_job, job(s, specs[0].label, first[s])) for s in cfg.seeds}, followups,
                      on_done=lambda f, n: log(_done_line(Path(f), n, total, t0, Path(f) in first.values())))
    pool_s = time.perf_counter() - t0
    n = gather(cfg)
    log(f"pool: {n} row(s) in {pool_s:.1f} s; tabulating (and timing latency) in this process")
    result = run_compare(replace(cfg, resume=True), log)
    result["meta"]["pool"] = {"workers": workers, "jobs": len(cfg.seeds) * len(specs), "pool_wall_s": pool_s}
    result["meta"]["wall_s"] = time.perf_counter() - t0
    return result


def gather(cfg: CompareConfig) -> int:
    """Gather the pool's job folders into ``<out>/cache``: every job's computed rows (the first per (method,
    level, seed); restored rows come from results.json, failed ones are retried) and the seeds' dense checkpoints.
    Rows already in ``<out>/cache/rows.jsonl`` that no job has are kept. Returns the number of rows gathered
    from the jobs (0 when there is no pool folder)."""
    cache = Path(cfg.out) / "cache"
    root = cache / "pool"
    if not root.is_dir():
        return 0
    seen, lines = set(), []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for r in _rows(folder):
            key = (r["method"], r["level"], r["seed"])
            if key not in seen and not r.get("error") and r.get("_onnx"):
                seen.add(key)
                lines.append(json.dumps(r))
        for ckpt in (folder / "cache").glob("dense-seed*.pt"):  # a seed's first job trained it, the others copied it
            shutil.copy2(ckpt, cache / ckpt.name)
    n = len(lines)
    for r in _rows(cache):
        if (r.get("method"), r.get("level"), r.get("seed")) not in seen:
            lines.append(json.dumps(r))
    (cache / "rows.jsonl").write_text("".join(line + "\n" for line in lines))
    return n


def run_in_phases(pool: Executor, firsts: dict[int, tuple], followups: Callable[[int], list[tuple]],
                  on_done: Callable[[object, int], None] | None = None) -> list:
    """Submit every seed's first job (``(fn, *args)``); the moment one finishes, submit the jobs
    ``followups(seed)`` returns (they need what it left: the dense checkpoint). No barrier between seeds: a
    worker never idles while another seed's dense phase runs. Returns every job's result, in completion order;
    the first job that raises stops the run (the executor's exit waits for the jobs already running).
    ``on_done(result, n_finished)`` is called in this process after each job (progress)."""
    pending: dict[Future, int | None] = {pool.submit(*firsts[s]): s for s in firsts}
    results = []
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for f in done:
            seed = pending.pop(f)
            results.append(f.result())
            if on_done is not None:
                on_done(results[-1], len(results))
            if seed is not None:
                for fn_args in followups(seed):
                    pending[pool.submit(*fn_args)] = None
    return results


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
