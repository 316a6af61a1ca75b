"""The Python API: the same pipeline as the CLI, for a model and data you hold in Python.

    import edgeprune
    result = edgeprune.build("my_models.py:make_net", train=(x_train, y_train), test=(x_test, y_test),
                             target="rpi5", weights="net.pt")
    result.passed, result.report["artifacts"], result.run_dir

Each stage is callable on its own too: :func:`compact` (surgery, verified), :func:`export_model`
(artifacts + parity) and :func:`benchmark` (host measurement).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import config as _config
from .errors import ConfigError, InputError


@dataclass
class BuildResult:
    run_dir: Path
    exit_code: int
    report: dict

    @property
    def passed(self) -> bool | None:
        b = self.report.get("budget")
        return None if b is None else bool(b.get("passed"))

    @property
    def artifacts(self) -> dict[str, Path]:
        exp = self.run_dir / "export"
        return {a["format"]: exp / a["path"] for a in self.report["artifacts"] if a.get("ok")}

    @property
    def metrics(self) -> dict:
        m = self.report["model"]
        return {"dense": m["dense"]["test_metric"], "compact": m["compact"]["test_metric"]}


def _arrays(part, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of an API data argument: an ``(x, y)`` pair of arrays/tensors or a torch Dataset."""
    if isinstance(part, (tuple, list)) and len(part) == 2:
        return np.asarray(part[0]), np.asarray(part[1])
    from .userdata import dataset_to_arrays

    return dataset_to_arrays(part, f"{name}=")


def _collect_data(train, val, test, options: dict) -> dict:
    """The in-memory splits as arrays, validated (lengths, shapes, dtypes) before anything is written."""
    from .userdata import ARRAY_KEYS, from_arrays

    renamed = [k for k in ARRAY_KEYS if k in options]
    if renamed:
        raise ConfigError(f"{renamed[0]}= names an array of a .npz dataset; with train=/test= data leave it out")
    arrays = {}
    for part, data in (("train", train), ("val", val), ("test", test)):
        if data is not None:
            arrays[f"x_{part}"], arrays[f"y_{part}"] = _arrays(data, part)
    from_arrays("train=/val=/test=", arrays, classes=options.get("classes"))  # the one-line error on bad data
    return arrays


def _data_path(output: Path, arrays: dict) -> Path:
    """``<output>/.data/<hash of the arrays>.npz``: the same data always maps to the same file."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        h.update(k.encode())
        h.update(str(arrays[k].dtype).encode() + str(arrays[k].shape).encode())
        h.update(np.ascontiguousarray(arrays[k]).tobytes())
    return Path(output) / ".data" / f"{h.hexdigest()[:16]}.npz"


def _save_data(path: Path, arrays: dict) -> bool:
    """Write the arrays to ``path`` atomically (so the run folder stays replayable); False if already there."""
    from .runfolder import TMP_PREFIX

    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(TMP_PREFIX + path.name)
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return True


def _remove_data(path: Path) -> None:
    path.unlink(missing_ok=True)
    if path.parent.is_dir() and not any(path.parent.iterdir()):
        path.parent.rmdir()


def _run_uses(cfg: dict, data_file: Path) -> bool:
    """Whether the run folder of ``cfg`` exists and was built from ``data_file`` (so the file must stay)."""
    from .pipeline import CONFIG_FILE, default_run_name
    from .runfolder import read_json

    try:
        run = Path(cfg["output"]) / (cfg["name"] or default_run_name(cfg))
        return read_json(run / CONFIG_FILE).get("dataset") == str(data_file)
    except Exception:  # no folder, no config, bad target name: nothing refers to the file
        return False


def _input_shape(example_input) -> str:
    shape = tuple(getattr(example_input, "shape", ()))
    if len(shape) < 2 or shape[0] != 1:
        raise ConfigError(f"example_input must be a batch-1 tensor such as torch.zeros(1, 3, 32, 32), got shape {shape}")
    return "x".join(str(int(d)) for d in shape[1:])


def build(model, *, train=None, test=None, val=None, dataset: str | None = None, target: str = "rpi4",
          method: str | None = None, metric: str | Callable | None = None, example_input=None, task: str | None = None,
          weights: str | None = None, output: str | Path = "runs", name: str | None = None, quiet: bool = True,
          force: bool = False, **options) -> BuildResult:
    """Run the whole pipeline, as ``edgeprune build`` does; return the run's :class:`BuildResult`.

    ``model``: a built-in name, ``"file.py:factory"``, a zero-argument callable returning an
    ``nn.Module``, or an ``nn.Module`` (then the run folder can only be resumed in this
    process). Data: ``train``/``test`` (and optional ``val``) as ``(x, y)`` arrays or torch
    Datasets (validated, then saved to ``<output>/.data/<hash>.npz`` so the run replays), or
    ``dataset=`` any CLI dataset source. ``method=None`` is the config's default method.
    ``metric``: a name, ``"file.py:function"`` or a callable ``(outputs, targets) -> float``
    (higher is better) used for the dense model, the compact model and the artifacts; a
    callable lives in this process only (a later CLI stage on the run folder says so).
    ``example_input``: a batch-1 tensor giving the input shape (default: the data's).
    ``weights``: a state_dict file; then ``epochs`` defaults to 0 (the pretrained model is
    the dense model). ``options`` are config keys (``epochs=...`` goes to ``[train]``,
    ``flops_keep=...`` to ``[method]``, ``x_train="images"`` to ``[data]``, ...) or whole
    sections (``model_options={"width": 16}``); ``search=True`` (or ``search={"enabled": True, "rounds": 5}``)
    is ``build --search``: rounds until the budget verdict settles.
    Bad input raises an :class:`~edgeprune.errors.EdgepruneError` and leaves no files behind.
    """
    import torch

    from .models import register_instance
    from .pipeline import build as _build
    from .report import build_report
    from .ui import UI

    cfg_over: dict = {"target": target, "output": str(output)}
    if method:
        cfg_over["method"] = {"name": method}
    if name:
        cfg_over["name"] = name
    if isinstance(model, torch.nn.Module):
        cfg_over["model"] = register_instance(model)
    elif isinstance(model, str):
        cfg_over["model"] = model
    elif callable(model):
        cfg_over["model"] = register_instance(model())
    else:
        raise ConfigError("model must be a built-in name, 'file.py:factory', a factory callable or an nn.Module")
    arrays = None
    if dataset is not None:
        if train is not None or test is not None:
            raise ConfigError("give either dataset= or train=/test= data, not both")
        cfg_over["dataset"] = str(dataset)
    elif train is not None and test is not None:
        arrays = _collect_data(train, val, test, options)
        cfg_over["dataset"] = str(_data_path(Path(output), arrays))
    else:
        raise ConfigError("give train= and test= data, or dataset=")
    if example_input is not None:
        cfg_over["input_shape"] = _input_shape(example_input)
    if task:
        cfg_over["task"] = task
    if weights:
        cfg_over["weights"] = str(weights)
    if metric is not None:
        if callable(metric):
            from .metrics import register_in_process

            metric = register_in_process(metric)
        cfg_over["metric"] = metric
    if isinstance(options.get("search"), bool):  # search=True: build --search (rounds until the verdict settles)
        options["search"] = {"enabled": options["search"]}
    for key, value in options.items():
        if key in _config.SCHEMA and key:  # a whole section: model_options={...}, budget={...}
            cfg_over[key] = value
            continue
        sections = [s for s, keys in _config.SCHEMA.items() if key in keys]
        if not sections:
            raise ConfigError(f"unknown option {key!r}; see the README's config reference")
        if len(sections) > 1:
            raise ConfigError(f"option {key!r} exists in several sections ({', '.join(sections)}): pass it inside "
                              f"one, e.g. {sections[0]}={{{key!r}: ...}}")
        section = sections[0]
        if section == "":
            cfg_over[key] = value
        else:
            cfg_over.setdefault(section, {})[key] = value
    cfg = _config.resolve(None, cfg_over)
    wrote = arrays is not None and _save_data(Path(cfg["dataset"]), arrays)
    try:
        if cfg["search"]["enabled"]:
            from .search import build_search

            code, b = build_search(cfg, ui=UI(quiet=quiet), force=force, via_api=True)
        else:
            code, b = _build(cfg, ui=UI(quiet=quiet), force=force, via_api=True)
    except BaseException:
        if wrote and not _run_uses(cfg, Path(cfg["dataset"])):
            _remove_data(Path(cfg["dataset"]))
        raise
    return BuildResult(b.run.path, code, build_report(b.run.path, b.target))


N_RANDOM_VERIFY = 32  # random inputs compact() compares on when it is given none


def _load_plan(plan):
    """(PruningPlan, run folder or None) from a plan, its dict, or a plan.json path."""
    from .surgery import PruningPlan

    if isinstance(plan, PruningPlan):
        return plan, None
    if isinstance(plan, dict):
        return PruningPlan.from_dict(plan), None
    if isinstance(plan, (str, Path)):
        path = Path(plan)
        return PruningPlan.load(path), path.parent
    raise InputError(f"plan must be a PruningPlan, its dict or a plan.json path, got {type(plan).__name__}")


def _example_for(plan, run_dir, example_input, inputs):
    """The batch-1 example: given, else the first of ``inputs``, else the shape the plan or its run recorded."""
    import torch

    if example_input is not None:
        return torch.as_tensor(example_input, dtype=torch.float32)
    if inputs is not None:
        return torch.as_tensor(inputs[:1], dtype=torch.float32)
    shape = plan.meta.get("input_shape")
    if shape is None and run_dir is not None and (run_dir / "train.json").is_file():
        from .runfolder import read_json

        shape = read_json(run_dir / "train.json")["arch"]["input_shape"]
    if shape is None:
        raise InputError("compact cannot tell the model's input shape: pass example_input=torch.zeros(1, C, H, W) "
                         "(or inputs=, or the plan.json of a run folder)")
    return torch.zeros(1, *shape)


def compact(model, plan, example_input=None, inputs=None, *, report: bool = False):
    """Surgery alone: the compact model of ``model`` under ``plan``, verified against the masked model.

    ``plan``: a :class:`~edgeprune.surgery.PruningPlan`, its dict, or a ``plan.json`` path.
    ``example_input`` (batch-1 tensor, for the dependency analysis) defaults to ``inputs[:1]``,
    else to the input shape of the plan's run folder (``train.json`` beside ``plan.json``).
    Every compaction is verified: on ``inputs`` (pass real inputs to check on the data's
    distribution), or, when none are given, on 32 random normal inputs of the example's
    shape (seed 0). A mismatch raises :class:`~edgeprune.errors.VerificationError`.
    ``report=True`` returns ``(model, verification report)`` (max/relative difference, number
    of inputs compared, parameters and MACs).
    """
    import torch

    from .surgery import compact_and_verify

    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    plan, run_dir = _load_plan(plan)
    example = _example_for(plan, run_dir, example_input, inputs)
    if inputs is None:
        g = torch.Generator().manual_seed(0)
        inputs = torch.randn(N_RANDOM_VERIFY, *example.shape[1:], generator=g)
    small, facts = compact_and_verify(model, plan, example, torch.as_tensor(inputs, dtype=torch.float32))
    return (small, facts) if report else small


def export_model(model, example_input=None, *, test_x, test_y, out_dir, formats=None, calib=None, task="classification"):
    """Export alone: ONNX / TFLite artifacts with parity checks (see :func:`edgeprune.export.export_all`).

    ``test_x`` are inputs as the model sees them (normalized); ``example_input`` defaults to
    ``test_x[:1]`` and ``calib`` (INT8 calibration) to ``test_x[:128]``.
    """
    import torch

    from .export import FORMATS, export_all

    test_x = np.ascontiguousarray(test_x, dtype=np.float32)
    example = example_input if example_input is not None else torch.from_numpy(test_x[:1])
    return export_all(model, example, calib=calib if calib is not None else test_x[:128], test_x=test_x,
                      test_y=test_y, out_dir=Path(out_dir), formats=list(formats or FORMATS), task=task)


def benchmark(path, *, threads: int = 1, runs: int = 50, warmup: int = 10, repeats: int = 3) -> dict:
    """Benchmark alone: latency and memory of an .onnx/.tflite file measured on this host, in
    ``repeats`` fresh processes of ``runs`` timed inferences each (medians; raw runs included)."""
    from .bench.host import measure_host

    return measure_host(path, threads=threads, runs=runs, warmup=warmup, repeats=repeats)
