"""The Python API: the same pipeline as the CLI, for a model and data you hold in Python.

    import edgeprune
    result = edgeprune.build("my_models.py:make_net", train=(x_train, y_train), test=(x_test, y_test),
                             target="rpi5", method="l1", weights="net.pt")
    result.passed, result.report["artifacts"], result.run_dir

Each stage is callable on its own too: :func:`compact` (surgery), :func:`export`
(artifacts + parity) and :func:`bench` (host measurement).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import config as _config
from .errors import ConfigError


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
    if isinstance(part, tuple) and len(part) == 2:
        return np.asarray(part[0]), np.asarray(part[1])
    from .userdata import _dataset_to_arrays

    return _dataset_to_arrays(part, name)


def _save_data(output: Path, train, val, test) -> str:
    """Write in-memory data to ``<output>/.data/<hash>.npz`` so the run folder stays replayable."""
    arrays = {}
    for part, data in (("train", train), ("val", val), ("test", test)):
        if data is not None:
            arrays[f"x_{part}"], arrays[f"y_{part}"] = _arrays(data, part)
    h = hashlib.sha256()
    for k in sorted(arrays):
        h.update(k.encode())
        h.update(np.ascontiguousarray(arrays[k]).tobytes())
    path = Path(output) / ".data" / f"{h.hexdigest()[:16]}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
    return str(path)


def build(model, *, train=None, test=None, val=None, dataset: str | None = None, target: str = "rpi4",
          method: str = "l1", metric: str | Callable | None = None, example_input=None, task: str | None = None,
          weights: str | None = None, output: str | Path = "runs", name: str | None = None, quiet: bool = True,
          force: bool = False, **options) -> BuildResult:
    """Run the whole pipeline. ``model``: a built-in name, ``"file.py:factory"``, a zero-argument
    callable returning an ``nn.Module``, or an ``nn.Module`` (then the run folder can only be
    resumed in this process). Data: ``train``/``test`` (and optional ``val``) as ``(x, y)``
    arrays or torch Datasets, or ``dataset=`` any CLI dataset source. ``options`` are config
    keys (``epochs=...`` goes to ``[train]``, ``flops_keep=...`` to ``[method]``, ...)."""
    import torch

    from .models import register_instance
    from .pipeline import build as _build
    from .report import build_report
    from .ui import UI

    cfg_over: dict = {"target": target, "output": str(output), "method": {"name": method}}
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
    if dataset is not None:
        cfg_over["dataset"] = dataset
    elif train is not None and test is not None:
        cfg_over["dataset"] = _save_data(Path(output), train, val, test)
    else:
        raise ConfigError("give train= and test= data, or dataset=")
    if example_input is not None:
        cfg_over["input_shape"] = "x".join(str(d) for d in tuple(example_input.shape))
    if task:
        cfg_over["task"] = task
    if weights:
        cfg_over["weights"] = str(weights)
    if metric is not None:
        if callable(metric):
            from .metrics import METRICS

            key = f"api:{getattr(metric, '__name__', 'metric')}"
            METRICS[key] = metric
            metric = key
        cfg_over["metric"] = metric
    for key, value in options.items():
        section = next((s for s, keys in _config.SCHEMA.items() if key in keys), None)
        if section is None:
            raise ConfigError(f"unknown option {key!r}; see the README's config reference")
        if section == "":
            cfg_over[key] = value
        else:
            cfg_over.setdefault(section, {})[key] = value
    cfg = _config.resolve(None, cfg_over)
    code, b = _build(cfg, ui=UI(quiet=quiet), force=force)
    return BuildResult(b.run.path, code, build_report(b.run.path, b.target.name))


def compact(model, plan, example_input, inputs=None):
    """Surgery alone: the compact model of ``model`` under ``plan`` (verified when ``inputs`` are given)."""
    from .surgery import compact as _compact, compact_and_verify

    if inputs is None:
        return _compact(model, plan, example_input)
    return compact_and_verify(model, plan, example_input, inputs)[0]


def export(model, example_input, *, test_x, test_y, out_dir, formats=None, calib=None, task="classification"):
    """Export alone: ONNX / TFLite artifacts with parity checks (see :func:`edgeprune.export.export_all`)."""
    from .export import FORMATS, export_all

    return export_all(model, example_input, calib=calib if calib is not None else test_x[:128], test_x=test_x,
                      test_y=test_y, out_dir=Path(out_dir), formats=list(formats or FORMATS), task=task)


def bench(path, *, threads: int = 1, runs: int = 50, repeats: int = 3) -> dict:
    """Benchmark alone: fresh-process latency and memory of an .onnx/.tflite file on this host."""
    from .bench.host import measure_host

    return measure_host(path, threads=threads, runs=runs, repeats=repeats)
