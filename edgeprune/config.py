"""Typed build configuration: defaults < TOML file < command-line flags.

Every key is declared once in :data:`SCHEMA` with its type, default and help text; the
README's config reference and the validation messages are generated from it. Unknown
keys and wrong types are errors that name the file and the key.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from .errors import ConfigError

# section -> key -> (type, default, help).  Section "" holds top-level keys.
SCHEMA: dict[str, dict[str, tuple[type | tuple, Any, str]]] = {
    "": {
        "target": (str, "rpi4", "target profile name or path to a profile TOML"),
        "dataset": (str, "digits", "dataset name (digits, fashion-mnist), a .npz file, an image folder, or file.py:function"),
        "data_dir": (str, "", "directory of the dataset files (fashion-mnist)"),
        "data_limit": (int, 0, "use only this many training samples (0 = all)"),
        "model": (str, "cnn", "built-in model name (see `edgeprune models`) or file.py:factory / module:factory"),
        "weights": (str, "", "state_dict (.pt) to start from instead of random initialisation; with it, train.epochs "
                             "defaults to 0 (the given model is the dense model)"),
        "input_shape": (str, "", "input shape CxHxW or 1xCxHxW (user models and image folders); default: the data's"),
        "task": (str, "", "classification or reconstruction; default: the model's (built-ins) or classification"),
        "metric": (str, "", "metric name (accuracy, psnr) or file.py:function(outputs, targets) -> float, higher is "
                            "better; used for the dense model, the compact model and every artifact; default: the task's"),
        "seed": (int, 0, "seed for data split, initialisation and training"),
        "output": (str, "runs", "parent directory of run folders"),
        "name": (str, "", "run folder name (default: <target>-<model>-<method>)"),
    },
    "data": {
        "x_train": (str, "x_train", "name of the training inputs in a .npz (or dict) dataset"),
        "y_train": (str, "y_train", "name of the training labels"),
        "x_val": (str, "x_val", "name of the validation inputs (optional: else 15% of the training split)"),
        "y_val": (str, "y_val", "name of the validation labels (optional)"),
        "x_test": (str, "x_test", "name of the test inputs"),
        "y_test": (str, "y_test", "name of the test labels"),
        "classes": (list, [], "class names in label order; default: the .npz's `classes` array, the image folder's "
                              "sub-folder names, or 0..N-1"),
    },
    "model_options": {},  # free-form keyword arguments for the model builder
    "train": {
        "epochs": (int, 12, "epochs of dense training; 0 (no retraining) by default when `weights` is given"),
        "finetune_epochs": (int, 6, "epochs of recovery training after compaction (0 = none)"),
        "batch_size": (int, 64, "mini-batch size"),
        "lr": (float, 0.01, "peak learning rate (SGD with momentum, cosine schedule)"),
        "weight_decay": (float, 5e-4, "L2 weight decay"),
        "threads": (int, 1, "torch threads for training, pruning and export (0: torch's default; 1 is the fastest for "
                            "small models on a shared machine: 2 threads on a busy 2-core host trained 10x slower)"),
    },
    "method": {
        "name": (str, "l1", "pruning method (see `edgeprune methods`)"),
        "flops_keep": (float, 0.0, "fraction of dense MACs to keep; 0 = the profile's flops_keep, else derived "
                                   "from the target's budget through the cost model (docs/budget.md)"),
        "width_multiple": (int, 0, "round kept widths up to this multiple; 0 = the target's"),
    },
    "method_options": {},  # free-form options for the chosen method
    "limit": {
        "guard": (str, "auto", "predict the one-shot pruning limit of the dense model before pruning and warn when the "
                               "target removes more: auto (small models only), on, off"),
    },
    "budget": {
        "latency_p50_ms": (float, None, "override the target's p50 latency budget"),
        "latency_p90_ms": (float, None, "override the target's p90 latency budget"),
        "peak_memory_mb": (float, None, "override the target's peak memory budget"),
        "model_size_mb": (float, None, "override the target's model file size budget"),
        "max_accuracy_drop": (float, None, "override the allowed metric drop vs the dense model, in the metric's own "
                                           "units (accuracy: points, PSNR: dB, a user metric: its own scale)"),
    },
    "search": {
        "enabled": (bool, False, "build --search: after bench, rebuild with a tighter (or looser) pruning target while "
                                 "a budget line fails, reusing the dense model, up to `rounds` rounds"),
        "objective": (str, "", "least-pruning (meet the budget with the least pruning) or fastest (the most pruning "
                               "whose accuracy stays within max_accuracy_drop); empty = the target's, else "
                               "least-pruning"),
        "rounds": (int, 4, "most build rounds of --search (1-10)"),
    },
    "export": {
        "formats": (list, [], "artifacts to export; empty = the target's list"),
        "calib_samples": (int, 256, "training samples used for INT8 calibration"),
        "dynamic_batch": (bool, False, "also write model.dynamic.onnx (symbolic batch axis), checked in onnxruntime "
                                       "at batch 1 and 7"),
        "int8_tolerance": (float, 1.0, "INT8 metric drop (in the metric's units) above which the build flags it (negative: flag INT8 unless it beats the float metric by that much)"),
    },
    "bench": {
        "runs": (int, 50, "timed inferences per measurement"),
        "warmup": (int, 10, "warm-up inferences before timing"),
        "repeats": (int, 3, "fresh processes per artifact (median is reported)"),
        "threads": (int, 1, "threads for the host measurement"),
        "remote": (str, "", "user@host[:port] of a real device to measure on over SSH"),
        "port": (int, 0, "SSH port of the device (0: ssh's default or ~/.ssh/config)"),
        "identity": (str, "", "SSH private key for the device login (empty: ssh's default)"),
        "python": (str, "", "python interpreter on the device (empty: python3)"),
        "ssh_options": (list, [], "extra `ssh -o` options, e.g. [\"StrictHostKeyChecking=accept-new\"]"),
        "adb": (str, "", "Android device to measure on with adb: its serial, or \"any\" for the only one "
                         "(empty: none; UNTESTED without a device)"),
        "benchmark_binary": (str, "", "path of LiteRT's benchmark_model on the Android device"),
    },
}

FREE_FORM = {"model_options", "method_options"}
METHOD_TABLES = "_method_tables"  # [method.<name>] tables while layers merge; folded into method_options by resolve()


def defaults() -> dict:
    cfg: dict = {}
    for section, keys in SCHEMA.items():
        target = cfg if section == "" else cfg.setdefault(section, {})
        for key, (_, default, _) in keys.items():
            target[key] = copy.deepcopy(default)
    return cfg


def _check_type(where: str, key: str, value, typ) -> Any:
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if value is None:
        return None
    if typ is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: key '{key}' must be a list, got {type(value).__name__}")
        return value
    if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        raise ConfigError(f"{where}: key '{key}' must be {typ.__name__}, got {type(value).__name__} {value!r}")
    return value


def merge(base: dict, overrides: dict, where: str) -> dict:
    """Merge ``overrides`` (same shape as the schema) into ``base``; validate every key."""
    cfg = copy.deepcopy(base)
    for key, value in overrides.items():
        if key in SCHEMA and key != "":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{key}' must be a table ([{key}])")
            if key in FREE_FORM:
                cfg[key].update(value)
                continue
            for sub, v in value.items():
                if key == "method" and isinstance(v, dict):  # [method.<name>]: that method's options
                    cfg.setdefault(METHOD_TABLES, {}).setdefault(sub, {}).update(v)
                    continue
                if sub not in SCHEMA[key]:
                    raise ConfigError(f"{where}: unknown key '{key}.{sub}'; known keys: {', '.join(SCHEMA[key])}")
                cfg[key][sub] = _check_type(where, f"{key}.{sub}", v, SCHEMA[key][sub][0])
        elif key in SCHEMA[""]:
            cfg[key] = _check_type(where, key, value, SCHEMA[""][key][0])
        else:
            known = list(SCHEMA[""]) + [f"[{s}]" for s in SCHEMA if s]
            raise ConfigError(f"{where}: unknown key '{key}'; known keys: {', '.join(known)}")
    return cfg


def load_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: malformed TOML ({e}); fix the syntax") from None


def resolve(config_file: str | Path | None = None, overrides: dict | None = None) -> dict:
    """defaults < ``config_file`` (or ./edgeprune.toml if present) < ``overrides``.

    Given ``weights`` and no explicit ``train.epochs``, the epochs default to 0: a pretrained
    model is the dense model as it is, and the method prunes and fine-tunes it.
    """
    cfg = defaults()
    layers = []
    if config_file is None and Path("edgeprune.toml").is_file():
        config_file = "edgeprune.toml"
    if config_file is not None:
        layers.append(load_file(config_file))
        cfg = merge(cfg, layers[-1], str(config_file))
    if overrides:
        layers.append(overrides)
        cfg = merge(cfg, overrides, "command line")
    if cfg["weights"] and not any("epochs" in (layer.get("train") or {}) for layer in layers):
        cfg["train"]["epochs"] = 0
    _fold_method_tables(cfg)
    validate(cfg)
    from .imports import name_code

    name_code(cfg["model"], cfg["metric"], cfg["dataset"])  # the user's own flags/config/API: code they named
    return cfg


def _fold_method_tables(cfg: dict) -> None:
    """``[method.<name>]`` tables: each is checked against that method's options; the chosen method's
    becomes ``method_options`` (``[method_options]`` / ``--method-option`` override it)."""
    from .methods.base import get_method

    tables = cfg.pop(METHOD_TABLES, {})
    for name, opts in tables.items():
        get_method(name, opts)
    cfg["method_options"] = {**tables.get(cfg["method"]["name"], {}), **cfg["method_options"]}


def validate_method(cfg: dict) -> None:
    """The method name and its options, checked against the method's own declaration (one mechanism for the
    config, the CLI, the API and compare: :func:`edgeprune.methods.options.build_options`)."""
    from .methods.base import get_method

    get_method(cfg["method"]["name"], cfg["method_options"])


def validate(cfg: dict) -> None:
    t = cfg["train"]
    for key in ("epochs", "batch_size"):
        if t[key] < (1 if key == "batch_size" else 0):
            raise ConfigError(f"train.{key} must be positive, got {t[key]}")
    if t["finetune_epochs"] < 0:
        raise ConfigError(f"train.finetune_epochs must be >= 0, got {t['finetune_epochs']}")
    if not 0.0 <= cfg["method"]["flops_keep"] <= 1.0:
        raise ConfigError(f"method.flops_keep must be in (0, 1], got {cfg['method']['flops_keep']}")
    validate_method(cfg)
    if cfg["search"]["objective"] not in ("", "least-pruning", "fastest"):
        raise ConfigError(f"search.objective must be least-pruning or fastest, got {cfg['search']['objective']!r}")
    if not 1 <= cfg["search"]["rounds"] <= 10:
        raise ConfigError(f"search.rounds must be in [1, 10], got {cfg['search']['rounds']}")
    if cfg["limit"]["guard"] not in ("auto", "on", "off"):
        raise ConfigError(f"limit.guard must be auto, on or off, got {cfg['limit']['guard']!r}")
    if cfg["data_limit"] < 0:
        raise ConfigError("data_limit must be >= 0")
    if cfg["task"] not in ("", "classification", "reconstruction"):
        raise ConfigError(f"task must be classification or reconstruction, got {cfg['task']!r}")
    if cfg["input_shape"]:
        parse_shape(cfg["input_shape"])
    keys = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    names = [cfg["data"][k] for k in keys]
    if any(not n for n in names) or len(set(names)) != len(names):
        bad = ", ".join(f"data.{k} = {n!r}" for k, n in zip(keys, names) if not n or names.count(n) > 1)
        raise ConfigError(f"[data] array names must be distinct and non-empty, got {bad}")
    validate_values(cfg)


#: key -> (lowest allowed, whether the bound itself is allowed) for numbers the checks above do not cover
_BOUNDS = {"train.lr": (0, False), "train.weight_decay": (0, True), "train.threads": (0, True),
           "method.width_multiple": (0, True), "export.calib_samples": (1, True),
           "bench.runs": (1, True), "bench.warmup": (0, True), "bench.repeats": (1, True), "bench.threads": (0, True),
           "bench.port": (0, True), "budget.latency_p50_ms": (0, False), "budget.latency_p90_ms": (0, False),
           "budget.peak_memory_mb": (0, False), "budget.model_size_mb": (0, False),
           "budget.max_accuracy_drop": (0, True)}


def validate_values(cfg: dict) -> None:
    """Ranges and names that would otherwise fail late (or never): finite numbers, counts, budgets,
    export formats, the run folder name and the ssh options (see :mod:`edgeprune.sshopts`)."""
    import math

    from .sshopts import check_ssh_options
    from .targets import ARTIFACTS

    for section, keys in SCHEMA.items():
        vals = cfg if section == "" else cfg.get(section, {})
        for key, (typ, _, _) in keys.items():
            v, full = vals.get(key), f"{section}.{key}" if section else key
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{full} must be a finite number, got {v}")
            if full in _BOUNDS and v is not None:
                lo, inclusive = _BOUNDS[full]
                if v < lo or (v == lo and not inclusive):
                    raise ConfigError(f"{full} must be {'>=' if inclusive else '>'} {lo}, got {v}")
    bad = [f for f in cfg["export"]["formats"] if f not in ARTIFACTS]
    if bad:
        raise ConfigError(f"export.formats: unknown format {bad[0]!r}; choose from {', '.join(ARTIFACTS)}")
    name = cfg["name"]
    if name and (name in (".", "..") or "/" in name or "\\" in name or name.startswith("-") or "\0" in name):
        raise ConfigError(f"name {name!r} must be a plain folder name (no '/', not '..'): the run folder goes "
                          "inside output")
    try:
        cfg["bench"]["ssh_options"] = check_ssh_options(cfg["bench"]["ssh_options"])
    except ConfigError as e:
        raise ConfigError(f"bench.ssh_options: {e}") from None


def parse_shape(text: str) -> tuple[int, ...]:
    """'1x3x32x32' or '3x32x32' -> (3, 32, 32) (the batch dimension is dropped)."""
    try:
        dims = tuple(int(d) for d in str(text).lower().split("x"))
    except ValueError:
        raise ConfigError(f"input_shape {text!r} is not like 1x3x32x32") from None
    if len(dims) == 4:
        if dims[0] != 1:
            raise ConfigError(f"input_shape {text!r}: the batch dimension must be 1 (1xCxHxW), or give CxHxW")
        dims = dims[1:]
    if not dims or any(d <= 0 for d in dims):
        raise ConfigError(f"input_shape {text!r} is not like 1x3x32x32")
    return dims


def reference_markdown() -> str:
    """The config reference table for the README, generated from the schema."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for section, keys in SCHEMA.items():
        if section == "method_options":
            lines.append("| `[method_options]` | table | | options of the chosen method, checked against its declaration "
                         "(`edgeprune methods`); also `--method-option KEY=VALUE` |")
            lines.append("| `[method.<name>]` | table | | options of method `<name>`, used when it is the chosen method "
                         "(`[method_options]` overrides them) |")
            continue
        if section in FREE_FORM:
            lines.append(f"| `[{section}]` | table | | free-form options passed to the {section.split('_')[0]} |")
            continue
        for key, (typ, default, help_) in keys.items():
            full = f"{section}.{key}" if section else key
            lines.append(f"| `{full}` | {getattr(typ, '__name__', typ)} | `{default!r}` | {help_} |")
    return "\n".join(lines)
