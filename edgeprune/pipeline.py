"""build(): the stages in order, over one run folder, with resume.

Each stage lives in :mod:`edgeprune.stages` (one module per stage) and declares which
config keys it depends on. A stage's fingerprint hashes those keys together with the
fingerprint of the stage before it, so changing, say, ``method.name`` reruns prune and
everything after it, and rerunning an unchanged ``build`` skips every complete stage.
A stage is also stale when an upstream file it consumed changed (content hashes in
stages.json, see :mod:`edgeprune.runfolder`); once one stage reruns, every stage after it
reruns too. One writer at a time holds the folder's lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .errors import InputError
from .runfolder import RunFolder, read_json, write_json
from .ui import UI

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_BUDGET_FAILED = 3
EXIT_INCOMPLETE = 4
EXIT_OUT_OF_REACH = 5  # errors.OutOfReachError

CONFIG_FILE = "config.json"

#: config key -> (CLI flag, Python API argument), for messages that tell the user what to change
OPTION_NAMES = {"input_shape": ("--input-shape", "example_input=")}


@dataclass
class Build:
    """The state shared by the stages of one run: config, run folder, target, data, UI."""

    cfg: dict
    run: RunFolder
    ui: UI = field(default_factory=UI)
    target_override: str | None = None
    outcome: dict = field(default_factory=dict)  # stage -> facts for the exit code
    via_api: bool = False  # called from edgeprune.build(): messages name its arguments, not the CLI flags
    code_aliases: dict = field(default_factory=dict)  # a run folder's recorded code spec -> the user's (trust.py)
    followers: bool = True  # under torchrun: the other ranks still wait for training stages (pipeline._release)

    def own_arch(self, arch: dict) -> dict:
        """A checkpoint's architecture with its recorded code spec replaced by the one the user named
        (a spec the user did not name stays, and :func:`edgeprune.imports.load_callable` refuses it)."""
        mine = self.code_aliases.get(arch.get("model"))
        return dict(arch, model=mine) if mine else arch

    def option(self, key: str) -> str:
        """How the user sets config ``key`` where they called from: a CLI flag or an API argument."""
        return OPTION_NAMES[key][1 if self.via_api else 0]

    @cached_property
    def target(self):
        from .targets import load_target

        return load_target(self.target_override or self.cfg["target"])

    @cached_property
    def data(self):
        from .data import load_dataset

        cfg = self.cfg
        data = cfg["data"]
        d = load_dataset(cfg["dataset"], seed=cfg["seed"], data_dir=cfg["data_dir"] or None, limit=cfg["data_limit"] or None,
                         input_shape=self.input_shape_override, keys={k: v for k, v in data.items() if k != "classes"},
                         classes=data["classes"] or None)
        if self.task == "reconstruction":
            # the model reproduces its input: a sigmoid output cannot reach normalized (negative) targets
            d.mean, d.std = 0.0, 1.0
        return d

    @property
    def input_shape_override(self):
        from .config import parse_shape

        return parse_shape(self.cfg["input_shape"]) if self.cfg["input_shape"] else None

    @cached_property
    def arch(self) -> dict:
        from .models import arch_spec

        shape = self.input_shape_override or self.data.input_shape
        return arch_spec(self.cfg["model"], shape, max(self.data.num_classes, 1), self.cfg["model_options"])

    def check_model(self) -> None:
        """Before any work: the input shape fits the data, the model runs on it, its output fits the
        task (one score per class, or the input's shape) and --weights load. Bad input fails here."""
        from .models import build_arch, check_input_shape, check_outputs, load_weights

        self.check_input_shape_matches_data()
        model = build_arch(self.arch)
        if self.cfg["weights"]:
            load_weights(model, self.cfg["weights"], shape_option=self.option("input_shape"))
        out = check_input_shape(model, self.arch, self.option("input_shape"))
        check_outputs(out, self.arch, self.task, self.data.num_classes)

    def check_input_shape_matches_data(self) -> None:
        """An explicit input shape must be the data's (image folders are resized to it, so they match)."""
        want, have = self.input_shape_override, self.data.input_shape
        if want is not None and tuple(want) != tuple(have):
            opt, fmt = self.option("input_shape"), lambda s: "x".join(str(d) for d in (1, *s))
            raise InputError(f"input shape {fmt(want)} ({opt}) does not match the data's {fmt(have)}: drop {opt} to "
                             "use the data's shape, or give data of that shape (image folders are resized to it)")

    @cached_property
    def input_digests(self) -> dict:
        """Content digests of the files the dense model is made from (weights, dataset, model file,
        metric file), so new bytes under the same path rerun training (see :func:`runfolder.source_digest`)."""
        from .data import DATASETS
        from .metrics import IN_PROCESS_PREFIX, METRICS
        from .models import MODELS
        from .runfolder import source_digest

        c = self.cfg
        metric = c["metric"]
        builtin_metric = not metric or metric.startswith(IN_PROCESS_PREFIX) or (metric in METRICS and ":" not in metric)
        return {"weights": source_digest(c["weights"]),
                "dataset": None if c["dataset"] in DATASETS else source_digest(c["dataset"]),
                "model": None if c["model"] in MODELS else source_digest(c["model"]),
                "metric": None if builtin_metric else source_digest(metric)}

    @cached_property
    def arrays(self) -> dict:
        """Normalised float32 splits, as the model sees them."""
        d = self.data
        return {
            "x_train": d.normalize(d.x_train), "y_train": d.y_train,
            "x_val": d.normalize(d.x_val), "y_val": d.y_val,
            "x_test": d.normalize(d.x_test), "y_test": d.y_test,
        }

    @property
    def task(self) -> str:
        from .models import model_task

        return self.cfg["task"] or model_task(self.cfg["model"])

    @property
    def metric(self) -> str | None:
        return self.cfg["metric"] or None

    @property
    def metric_name(self) -> str:
        """The one metric of the run: the dense model, the compact model and every artifact use it."""
        from .train import TASK_METRIC

        return self.cfg["metric"] or TASK_METRIC[self.task]

    def warn_metric_scale(self) -> None:
        """A user metric has its own scale: the target's max_accuracy_drop (points / dB) may not fit it."""
        from .metrics import metric_unit

        own_drop = self.cfg["budget"]["max_accuracy_drop"] is not None
        target_drop = self.target.budget.max_accuracy_drop
        if ":" in self.metric_name and not own_drop and target_drop is not None and not metric_unit(self.metric_name):
            self.ui.warn(f"the target's max_accuracy_drop {target_drop:g} applies to your metric in its own units; "
                         "set budget.max_accuracy_drop (API: max_accuracy_drop=) on its scale")

    @cached_property
    def pruning_target(self):
        """The fraction of MACs to keep and where it comes from: given, or derived from the budget
        (:mod:`edgeprune.bench.planning`)."""
        from .bench.planning import pruning_target

        return pruning_target(self)

    @property
    def flops_keep(self) -> float:
        return self.cfg["method"]["flops_keep"] or self.pruning_target.flops_keep

    @property
    def width_multiple(self) -> int:
        return self.cfg["method"]["width_multiple"] or self.target.width_multiple or 1


def fingerprint(parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_order() -> list:
    from .stages import STAGES

    return STAGES


def _stage_fingerprints(b: Build) -> dict[str, str]:
    prev, out = "", {}
    for st in stage_order():
        prev = fingerprint([prev, st.name, st.depends(b)])
        out[st.name] = prev
    return out


def default_run_name(cfg: dict) -> str:
    from .targets import load_target

    tname = Path(cfg["target"]).stem if cfg["target"].endswith(".toml") else load_target(cfg["target"]).name
    model = cfg["model"].rpartition(":")[2] if ":" in cfg["model"] else cfg["model"]
    return f"{tname}-{model}-{cfg['method']['name']}"


def prepare_run(cfg: dict, run_dir: Path | None = None) -> RunFolder:
    """Validate names eagerly (before any work: the dataset is loaded and checked by the build) and
    name the run folder."""
    from .methods import get_method
    from .models import MODELS
    from .targets import load_target

    load_target(cfg["target"])
    if run_dir is None:
        check_output(Path(cfg["output"]))
    if cfg["model"] not in MODELS and ":" not in cfg["model"]:
        from .models import build_model

        build_model(cfg["model"], (1, 8, 8))  # raises the one-line error
    get_method(cfg["method"]["name"], cfg["method_options"])
    if cfg["metric"]:
        from .metrics import get_metric

        get_metric(cfg["metric"])  # an unknown or in-process (API) metric fails here
    path = Path(run_dir) if run_dir else Path(cfg["output"]) / (cfg["name"] or default_run_name(cfg))
    return RunFolder(path)


def check_output(out: Path) -> None:
    """``output`` is (or can become) a folder this user can write to; else a one-line error."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} is a file, not a folder: give a directory for the run folders (--output DIR)")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output {out} is not writable ({parent} does not let you create files): choose a folder "
                         "you can write to (--output DIR)")


#: the stages every rank runs under torchrun (they train; DDP); the others run on rank 0 only
DIST_STAGES = ("train", "prune", "compact", "finetune")


def build(cfg: dict, run_dir: Path | None = None, **kw) -> tuple[int, Build]:
    """See :func:`_build`. Under torchrun (:mod:`edgeprune.distributed`) rank 0 builds and alone writes the
    run folder; every other rank follows it through the training stages (:func:`_follow`)."""
    from . import distributed as D

    if not D.is_distributed():
        return _build(cfg, run_dir, **kw)
    if not D.is_main():
        return _follow(cfg, run_dir, **kw)
    out = _build(cfg, run_dir, **kw)
    _release(out[1])  # nothing trained at all (every stage up to date)
    return out


def _follow(cfg: dict, run_dir: Path | None = None, *, ui: UI | None = None, force: bool = False, only=None,
            target_override: str | None = None, via_api: bool = False, code_aliases: dict | None = None):
    """A rank other than 0: the same checks, then each stage rank 0 announces, in a scratch folder that
    first receives rank 0's input files (so every rank prunes, compacts and fine-tunes the same model)."""
    import tempfile

    from . import distributed as D
    from .train import torch_threads

    prepare_run(cfg, run_dir)
    with tempfile.TemporaryDirectory(prefix=f"edgeprune-rank{D.rank()}-") as tmp:
        b = Build(cfg, RunFolder(Path(tmp)), UI(quiet=True), target_override, via_api=via_api,
                  code_aliases=dict(code_aliases or {}))
        b.target  # noqa: B018
        b.data  # noqa: B018
        stages = {st.name: st for st in stage_order()}
        with torch_threads(cfg["train"].get("threads", 1)):
            while (msg := D.broadcast_object(None)) is not None:
                name, inputs = msg
                D.sync_files(b.run.path, inputs)
                stages[name].run(b)
    return EXIT_OK, b


def _build(cfg: dict, run_dir: Path | None = None, *, ui: UI | None = None, force: bool = False, only: list[str] | None = None,
           target_override: str | None = None, via_api: bool = False, code_aliases: dict | None = None) -> tuple[int, Build]:
    """Run every stage (or ``only`` these) that is not already complete; return (exit code, build).

    The run folder's lock is held throughout (a second writer waits, see :meth:`RunFolder.lock`).
    A run folder this call created is removed again if it fails (any exception) before a
    stage finished: it would hold only config.json.
    """
    run = prepare_run(cfg, run_dir)
    b = Build(cfg, run, ui or UI(), target_override, via_api=via_api, code_aliases=dict(code_aliases or {}))
    created = not run.path.exists()
    # load data and target before creating anything, so bad input leaves no folder behind
    b.target  # noqa: B018
    b.data  # noqa: B018
    if created or "train" in (only or ["train"]):
        b.check_model()
    b.warn_metric_scale()
    try:
        run.path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create run folder {run.path} ({e.strerror}): choose another --output or "
                         "--name") from None
    try:
        with run.lock(warn=b.ui.warn):
            try:
                if only:
                    _check_ready(b, run, only)
                write_json(run / CONFIG_FILE, cfg)
                if not only or "prune" in only:
                    from .bench.planning import announce

                    announce(b)  # the pruning target, derived from the budget before any training
                fps = _stage_fingerprints(b)
                from .train import torch_threads  # torch is imported by the stages, not at CLI start-up

                with torch_threads(cfg["train"].get("threads", 1)):
                    _run_stages(b, run, fps, force=force, only=only)
            except BaseException:
                # a folder this call created and in which no stage finished holds nothing worth keeping
                if created and not (run.path / RunFolder.STAGES_FILE).exists():
                    shutil.rmtree(run.path, ignore_errors=True)
                raise
    except BaseException:
        if created and run.path.is_dir() and not any(run.path.iterdir()):
            run.path.rmdir()  # we made it empty and never got the lock
        raise
    return exit_code(b), b


def _check_ready(b: Build, run: RunFolder, only: list[str]) -> None:
    """A stage command needs the results of the stages before it, and the code the user named must be the
    code the run was built with."""
    from .trust import check_sources

    if "train" not in only:  # retraining rebuilds from the code as it is now
        check_sources((run.record("train") or {}).get("sources"), b.input_digests, run.path)
    first = min(i for i, st in enumerate(stage_order()) if st.name in only)
    for st in stage_order()[:first]:
        rel = summary_path(st, b)
        per_target = hasattr(st, "target_file")
        if (per_target or run.record(st.name)) and (run.path / rel).is_file():
            continue
        tgt = f" --target {b.target.name}" if per_target and b.target_override else ""
        why = f"no {st.name} result for target {b.target.name}" if per_target else f"its {st.name} stage has not finished"
        raise InputError(f"{run.path} has {why} ({rel} missing): run `edgeprune {st.name} {run.path}{tgt}` first "
                         "(or `edgeprune build`)")


def _run_stages(b: Build, run: RunFolder, fps: dict, *, force: bool, only: list[str] | None) -> None:
    """The stage loop of :func:`build`: skip complete stages (unless ``force``/``only``), run the rest.

    A stage is skipped only if its record, outputs, inputs and fingerprint are all current; once one
    stage runs, every later stage runs too (its inputs are new)."""
    order = stage_order()
    rerun = force
    for i, st in enumerate(order):
        if only and st.name not in only:
            continue
        fp = fps[st.name]
        if not rerun and not only:
            why = run.stale_reason(st.name, fp)
            if why is None:
                b.ui.skipped(st.name)
                b.outcome[st.name] = read_json(run / summary_path(st, b))
                continue
            if why != "not run yet":
                b.ui.log(f"[yellow]↻ {st.name}: stale ({why}); it and every later stage rerun[/]")
        rerun = True
        inputs = run.outputs(s.name for s in order[:i])
        run.forget(st.name)  # a failure from here on leaves no record that a rerun would trust
        if st.name == "prune":  # before the method's training budget: how far can this dense model go?
            from .bench.planning import refine_after_guard
            from .limit.guard import run_guard

            refine_after_guard(b, fps, run_guard)  # objective fastest may follow the guard's estimate
            fps.update(_stage_fingerprints(b))
            fp = fps[st.name]
        with b.ui.stage(st.name, st.describe(b)):
            t0 = time.perf_counter()
            if st.name in DIST_STAGES:
                _lead(st.name, run, inputs)
            files = st.run(b)
            if st.name in DIST_STAGES and not any(s.name in DIST_STAGES and (not only or s.name in only)
                                                  for s in order[i + 1:]):
                _release(b)  # the other ranks exit now instead of waiting through export and bench
            partial = (b.outcome.get(st.name) or {}).get("complete") is False
            run.mark_complete(st.name, files, fp, time.perf_counter() - t0, inputs=inputs, partial=partial,
                              sources=b.input_digests if st.name == "train" else None)


def _lead(stage: str, run: RunFolder, inputs: list[str]) -> None:
    """Under torchrun, rank 0 announces ``stage`` to the other ranks and sends them its input files."""
    from . import distributed as D

    if D.is_distributed():
        D.broadcast_object((stage, inputs))
        D.sync_files(run.path, inputs)


def _release(b: Build) -> None:
    """Under torchrun, rank 0 tells the other ranks that no training stage is left (once per build; a failing
    rank 0 exits instead, and torchrun stops the others)."""
    from . import distributed as D

    if D.is_distributed() and b.followers:
        D.broadcast_object(None)
        b.followers = False


def summary_path(stage, b: Build) -> str:
    """The stage's JSON record (per-target stages name it after the target)."""
    return stage.target_file(b) if hasattr(stage, "target_file") else stage.summary_file


def exit_code(b: Build) -> int:
    exp = b.outcome.get("export", {})
    if exp and not exp.get("complete", True):
        return EXIT_INCOMPLETE
    bud = b.outcome.get("budget", {})
    if bud and bud.get("passed") is False:
        return EXIT_BUDGET_FAILED
    return EXIT_OK


def open_run(run_dir: Path) -> dict:
    """The resolved config of an existing run folder."""
    p = Path(run_dir) / CONFIG_FILE
    if not p.is_file():
        raise InputError(f"{run_dir} is not an edgeprune run folder (no {CONFIG_FILE}); run `edgeprune build` first")
    try:
        return read_json(p)
    except (OSError, json.JSONDecodeError):
        raise InputError(f"{p} is corrupt; rerun `edgeprune build` into a new folder") from None
