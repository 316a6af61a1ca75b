"""What a comparison runs: method specs (``NAME[key=value,...]@N``) and the run's configuration.

Methods come from the registry only (:mod:`edgeprune.methods`, Torch-Pruning's peers included);
a spec's options are validated by the method's own options class before anything trains.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field

from ..errors import ConfigError
from ..methods import METHODS, get_method, list_methods

LEVELS_DEFAULT = (0.5, 0.75, 0.9)
DENSE_FT = "dense+ft"  # reference row: the dense model fine-tuned with the same budget as every pruned one
RESULT_FILES = ("results.csv", "results.json", "table.md", "metric_vs_macs.png", "README.md")
CSV_FIELDS = [
    "method", "base_method", "kind", "level", "requested_keep", "seed", "width_multiple", "task", "metric_name",
    "metric", "metric_before_ft", "dense_metric", "macs", "params", "dense_macs", "dense_params", "macs_kept",
    "params_kept", "tp_ops", "tp_ops_kept", "macs_check", "latency_ms", "latency_spread_pct", "speedup",
    "prune_s", "train_s", "own_epochs", "finetune_epochs", "onnx_max_abs_diff", "arch", "widths", "error",
]


def family(name: str) -> str:
    """"torch-pruning" for Torch-Pruning's criteria, else "edgeprune" (a label for tables and plots)."""
    return getattr(METHODS[name], "family", "edgeprune")


def available_methods() -> list[str]:
    """Every method a comparison can run: the registry's, picked up at call time."""
    return list_methods()


def tp_methods() -> list[str]:
    """The registered Torch-Pruning peers (tp-l1, tp-l2, tp-taylor, tp-groupnorm, tp-random)."""
    return [m for m in list_methods() if family(m) == "torch-pruning"]


@dataclass(frozen=True)
class MethodSpec:
    label: str  # as given: "l1", "tp-l2@8", "pl-gates[gamma=0]"
    name: str  # registry / peer name
    width_multiple: int | None  # None: the run's default
    options: tuple = ()  # ((key, value), ...) from NAME[key=value,...]: the method's own options

    @property
    def kind(self) -> str:
        return family(self.name)


_SPEC = re.compile(r"^(?P<name>[^\[\]@]+)(?:\[(?P<opts>[^\]]*)\])?(?:@(?P<mult>.*))?$")


def _option_value(text: str):
    """``0`` -> 0, ``0.5`` -> 0.5, ``true`` -> True, ``"x"``/``x`` -> "x" (TOML literals, else a string)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_method(spec: str) -> MethodSpec:
    """``NAME``, ``NAME@N`` (width multiple) or ``NAME[key=value,...]`` (method options), e.g. ``pl-gates[gamma=0]@8``."""
    spec = spec.strip()
    m = _SPEC.match(spec)
    name = m.group("name").strip() if m else spec
    known = available_methods()
    if spec.count("[") != spec.count("]"):
        raise ConfigError(f"method {spec!r}: unbalanced brackets; write options as NAME[key=value,...], "
                          "e.g. pl-gates[gamma=0]")
    if not m or name not in known:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(known)} (or 'all', 'edgeprune', 'tp')")
    wm = None
    mult = m.group("mult")
    if mult is not None:
        if not mult.isdigit() or int(mult) < 1:
            raise ConfigError(f"method {spec!r}: the part after '@' must be a width multiple >= 1, e.g. l1@8")
        wm = int(mult)
    options: dict = {}
    for item in filter(None, (s.strip() for s in (m.group("opts") or "").split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"method {spec!r}: options are written key=value, e.g. pl-gates[gamma=0]")
        options[key.strip()] = _option_value(value.strip())
    if options:
        get_method(name, options)  # the method's options class: unknown options or bad values fail now
    return MethodSpec(spec, name, wm, tuple(sorted(options.items())))


def split_methods(text: str) -> list[str]:
    """A comma list of method specs; commas inside ``[...]`` belong to the spec's options."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [s.strip() for s in out if s.strip()]


def expand_methods(text: str | list[str] | None) -> list[MethodSpec]:
    """``"all"`` (default), ``"edgeprune"``, ``"tp"`` or a comma list of specs (``NAME@N``, ``NAME[k=v,...]``)."""
    items = text if isinstance(text, list) else split_methods(text or "all")
    out: list[str] = []
    for it in items:
        it = it.strip()
        if it == "all":
            out += available_methods()
        elif it == "edgeprune":
            out += [m for m in list_methods() if family(m) == "edgeprune"]
        elif it == "tp":
            out += tp_methods()
        else:
            out.append(it)
    specs = [parse_method(s) for s in dict.fromkeys(out)]
    if not specs:
        raise ConfigError("no method to compare")
    return specs


# --------------------------------------------------------------------------------------------- config

@dataclass
class CompareConfig:
    dataset: str = "fashion-mnist"
    model: str = "resnet"
    model_options: dict = field(default_factory=dict)
    levels: list[float] = field(default_factory=lambda: list(LEVELS_DEFAULT))
    methods: list[str] = field(default_factory=lambda: ["all"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: int = 3  # dense training
    method_epochs: int | None = None  # training inside methods that train before pruning (None: = epochs)
    finetune_epochs: int = 1
    # "equal-total": every method gets method_epochs + finetune_epochs epochs after the dense phase, whatever
    # it spends them on (a method's own training counts; one that trains none fine-tunes them all);
    # "equal-finetune": every method fine-tunes finetune_epochs, methods that train get method_epochs on top
    epoch_budget: str = "equal-total"
    target_metric: float | None = None  # time to reach this validation metric is reported (None: not)
    val_samples: int = 2000  # validation samples for the per-epoch curves
    train_limit: int = 0  # 0 = the whole training split
    data_seed: int = 0  # the data split/subset is the same for every seed
    data_dir: str = ""
    batch_size: int = 64
    lr: float = 0.01
    finetune_lr: float = 0.005  # the pipeline's fine-tune stage also halves the lr
    weight_decay: float = 5e-4
    width_multiple: int = 1
    method_options: dict = field(default_factory=dict)  # {method: {option: value}} for registry methods
    threads: int = 1  # torch threads for training (1 is much faster on a shared 2-core host)
    latency: bool = True
    latency_runs: int = 50
    latency_warmup: int = 10
    latency_rounds: int = 3
    out: str = "benchmarks/results/compare"
    resume: bool = False
    finished_only: bool = False  # with resume: tabulate the finished rows only, train nothing (a run cut off)
    dense_ft: bool = True  # the dense+ft reference row (costs as much as one method's budget on the dense model)

    def fingerprint(self, *keys: str) -> str:
        return fingerprint_of(asdict(self), *keys)

    DENSE_KEYS = ("dataset", "model", "model_options", "epochs", "train_limit", "data_seed", "data_dir",
                  "batch_size", "lr", "weight_decay")
    ROW_KEYS = DENSE_KEYS + ("finetune_epochs", "finetune_lr", "width_multiple", "method_options",
                             "method_epochs", "epoch_budget", "val_samples")

    @property
    def method_train_epochs(self) -> int:
        return self.epochs if self.method_epochs is None else self.method_epochs

    @property
    def post_dense_epochs(self) -> int:
        """Epochs each method gets after the shared dense phase under ``equal-total``."""
        return self.method_train_epochs + self.finetune_epochs


EPOCH_BUDGETS = ("equal-total", "equal-finetune")


def method_train_options(cfg: CompareConfig, seed: int = 0) -> dict:
    """The run's training options as a registry method sees them (``FitContext.train_options``)."""
    return {"epochs": cfg.method_train_epochs, "finetune_epochs": cfg.finetune_epochs, "batch_size": cfg.batch_size,
            "lr": cfg.lr, "weight_decay": cfg.weight_decay, "seed": seed}


def method_options(spec: "MethodSpec", cfg: CompareConfig) -> dict:
    """A registry method's options: ``--method-options`` for its name, overridden by the spec's ``[k=v]``."""
    return {**cfg.method_options.get(spec.name, {}), **dict(spec.options)}


def fingerprint_of(config: dict, *keys: str) -> str:
    """A short hash of ``keys`` of a config as a dict (all of it without keys): :meth:`CompareConfig.fingerprint`,
    also of a config read back from a ``results.json``."""
    blob = json.dumps({k: config.get(k) for k in keys} if keys else config, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def epoch_plan(spec: "MethodSpec", cfg: CompareConfig) -> dict:
    """How many epochs a method trains on its own (before pruning) and fine-tunes (after), and whether it
    starts from scratch (then the dense phase's epochs are part of its budget too)."""
    m = get_method(spec.name, method_options(spec, cfg))
    own = m.own_epochs(method_train_options(cfg))
    scratch = bool(getattr(m, "trains_from_scratch", False))
    if cfg.epoch_budget == "equal-finetune":
        ft = cfg.finetune_epochs
    else:
        ft = max(0, cfg.post_dense_epochs + (cfg.epochs if scratch else 0) - own)
    return {"own_epochs": own, "finetune_epochs": ft, "from_scratch": scratch}

