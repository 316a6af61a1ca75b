"""build(): the stages in order, over one run folder, with resume.

Each stage lives in :mod:`edgeprune.stages` (one module per stage) and declares which
config keys it depends on. A stage's fingerprint hashes those keys together with the
fingerprint of the stage before it, so changing, say, ``method.name`` reruns prune and
everything after it, and rerunning an unchanged ``build`` skips every complete stage.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .errors import EdgepruneError, InputError
from .runfolder import RunFolder, read_json, write_json
from .ui import UI

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_BUDGET_FAILED = 3
EXIT_INCOMPLETE = 4

CONFIG_FILE = "config.json"


@dataclass
class Build:
    """The state shared by the stages of one run: config, run folder, target, data, UI."""

    cfg: dict
    run: RunFolder
    ui: UI = field(default_factory=UI)
    target_override: str | None = None
    outcome: dict = field(default_factory=dict)  # stage -> facts for the exit code

    @cached_property
    def target(self):
        from .targets import load_target

        return load_target(self.target_override or self.cfg["target"])

    @cached_property
    def data(self):
        from .data import load_dataset

        cfg = self.cfg
        d = load_dataset(cfg["dataset"], seed=cfg["seed"], data_dir=cfg["data_dir"] or None, limit=cfg["data_limit"] or None,
                         input_shape=self.input_shape_override)
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
        """Build the model once, run it on the input shape and load --weights: bad input fails here, early."""
        from .models import build_arch, check_input_shape, load_weights

        model = build_arch(self.arch)
        if self.cfg["weights"]:
            load_weights(model, self.cfg["weights"])
        check_input_shape(model, self.arch)

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
    def flops_keep(self) -> float:
        return self.cfg["method"]["flops_keep"] or self.target.budget.flops_keep or 1.0

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
    """Validate names eagerly (before any work) and create the run folder."""
    from .data import DATASETS
    from .methods import get_method
    from .models import MODELS
    from .targets import load_target

    load_target(cfg["target"])
    if cfg["dataset"] not in DATASETS:
        from .data import load_dataset

        load_dataset(cfg["dataset"])  # raises the one-line error
    if cfg["model"] not in MODELS and ":" not in cfg["model"]:
        from .models import build_model

        build_model(cfg["model"], (1, 8, 8))  # raises the one-line error
    get_method(cfg["method"]["name"], cfg["method_options"])
    path = Path(run_dir) if run_dir else Path(cfg["output"]) / (cfg["name"] or default_run_name(cfg))
    return RunFolder(path)


def build(cfg: dict, run_dir: Path | None = None, *, ui: UI | None = None, force: bool = False, only: list[str] | None = None,
          target_override: str | None = None) -> tuple[int, Build]:
    """Run every stage (or ``only`` these) that is not already complete; return (exit code, build)."""
    run = prepare_run(cfg, run_dir)
    b = Build(cfg, run, ui or UI(), target_override)
    created = not run.path.exists()
    try:
        # load data and target before creating anything, so bad input leaves no folder behind
        b.target  # noqa: B018
        b.data  # noqa: B018
        if created or "train" in (only or ["train"]):
            b.check_model()
        run.path.mkdir(parents=True, exist_ok=True)
        write_json(run / CONFIG_FILE, cfg)
        fps = _stage_fingerprints(b)
        for st in stage_order():
            if only and st.name not in only:
                continue
            fp = fps[st.name]
            if not force and not only and run.is_complete(st.name, fp):
                b.ui.skipped(st.name)
                b.outcome[st.name] = read_json(run / summary_path(st, b))
                continue
            with b.ui.stage(st.name, st.describe(b)):
                t0 = time.perf_counter()
                files = st.run(b)
                run.mark_complete(st.name, files, fp, time.perf_counter() - t0)
    except EdgepruneError:
        # a folder this call created and in which no stage finished holds nothing worth keeping
        if created and run.path.exists() and not (run.path / RunFolder.STAGES_FILE).exists():
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    return exit_code(b), b


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
