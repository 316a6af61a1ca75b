"""Target profiles: what a device is (facts with sources) and what a build must meet on it (budget).

A profile is one TOML file. The built-in ones live next to this module (``rpi4.toml`` ...); a
user adds a board by writing a file with the same schema and passing its path::

    from edgeprune.targets import load_target, list_targets
    list_targets()                      # ['android-flagship', 'android-mid', 'host', ...]
    t = load_target("rpi5")             # built-in, by name
    t = load_target("boards/my.toml")   # any file with the schema below
    t = load_target("rpi4-measured")    # ./rpi4-measured.toml (written by `edgeprune calibrate`)
    t = load_target("jetson")           # a family: its default member, jetson-orin-nano (families.toml)

Schema (every key is checked; an unknown key is an error so a typo cannot be silently ignored)::

    name = "rpi4"                 # required, [a-z0-9_-]
    title = "Raspberry Pi 4 Model B (4 GB)"
    platform = "rpi"              # rpi | jetson | android | other
    notes = "..."                 # optional, free text
    [runtime]
    preferred = "tflite"          # tflite | onnx
    artifacts = ["tflite-int8", "tflite", "onnx", "onnx-int8"]   # best first
    threads = 4                   # threads the runtime uses on this target
    width_multiple = 4            # kept channel widths rounded up to this
    onnx_opset = 17
    [device]                      # each fact: value, source, basis (spec|derived|measured|unverified),
    cores = { value = 4, source = "...", basis = "spec" }   # optional unit (must match the canonical
    ...                                                     # unit below) and note
    # optional, used by the cost model: sustained_fp32_gflops, sustained_1t_fp32_gflops,
    # sustained_int8_gops (a published or measured conv-net throughput), per_op_overhead_us (measured),
    # simd_fp32_lanes, l2_cache_kb; see edgeprune/bench/costmodel.py
    [budget]                      # all optional; a missing key means "not budgeted"
    flops_keep = 0.5              # optional: fraction of the dense MACs to keep; without it the build derives
                                  # the target from the lines below through the cost model
                                  # (edgeprune/bench/planning.py); a given value overrides the derivation
    latency_p50_ms = 10.0
    latency_p90_ms = 15.0
    peak_memory_mb = 32.0         # the model's own memory: peak RSS minus the runtime's footprint
    model_size_mb = 4.0           # artifact file size
    max_accuracy_drop = 2.0       # metric points below the dense model
    objective = "least-pruning"   # optional: least-pruning (meet the budget, prune no more) | fastest (the
                                  # most pruning whose accuracy stays within max_accuracy_drop)
    rationale = "..."             # optional, why these numbers

Peak compute facts (``peak_fp32_gflops``, ``peak_int8_gops``) describe the cores that the runtime
uses at ``runtime.threads`` threads (on big.LITTLE phones: the fastest ``threads`` cores), so the
cost model can use them directly.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError, InputError

__all__ = ["Fact", "Budget", "Target", "Family", "load_target", "list_targets", "builtin_targets", "user_targets",
           "families", "resolve_family", "BASES", "PLATFORMS", "ARTIFACTS"]

BASES = ("spec", "derived", "measured", "unverified")
PLATFORMS = ("rpi", "jetson", "android", "other")
ARTIFACTS = ("tflite-int8", "tflite", "onnx", "onnx-int8")
RUNTIMES = ("tflite", "onnx")
OBJECTIVES = ("least-pruning", "fastest")

# fact name -> (canonical unit, python type(s) of the value, required)
DEVICE_FACTS: dict[str, tuple[Optional[str], tuple[type, ...], bool]] = {
    "cpu": (None, (str,), True),
    "cores": ("count", (int,), True),
    "clock_ghz": ("GHz", (int, float), True),
    "peak_fp32_gflops": ("GFLOP/s", (int, float), True),
    "peak_int8_gops": ("GOP/s", (int, float), True),
    "mem_bandwidth_gbs": ("GB/s", (int, float), True),
    "ram_mb": ("MB", (int, float), True),
    "int8_dot_product": (None, (bool,), True),
    # optional facts used by the cost model (edgeprune/bench/costmodel.py)
    "sustained_fp32_gflops": ("GFLOP/s", (int, float), False),     # conv-net throughput at runtime.threads
    "sustained_1t_fp32_gflops": ("GFLOP/s", (int, float), False),  # the same on one thread
    "sustained_int8_gops": ("GOP/s", (int, float), False),         # int8 conv-net throughput, runtime.threads
    "per_op_overhead_us": ("us", (int, float), False),             # measured by `edgeprune calibrate`
    "simd_fp32_lanes": ("count", (int,), False),                   # fp32 lanes per vector (NEON 4, AVX-512 16)
    "l2_cache_kb": ("KiB", (int, float), False),
    # optional facts, not modelled
    "accelerator": (None, (str,), False),
    "accel_fp16_gflops": ("GFLOP/s", (int, float), False),
    "accel_int8_tops": ("TOP/s", (int, float), False),
}
FACT_KEYS = {"value", "unit", "source", "basis", "note"}
TOP_KEYS = {"name", "title", "platform", "notes", "runtime", "device", "budget"}
RUNTIME_KEYS = {"preferred", "artifacts", "threads", "width_multiple", "onnx_opset", "notes"}
BUDGET_KEYS = (
    "flops_keep",
    "latency_p50_ms",
    "latency_p90_ms",
    "peak_memory_mb",
    "model_size_mb",
    "max_accuracy_drop",
)
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class Fact:
    """One device fact and where it comes from."""

    value: Any
    unit: Optional[str]
    source: str
    basis: str  # spec | derived | measured | unverified
    note: Optional[str] = None

    def to_dict(self) -> dict:
        d = {"value": self.value, "unit": self.unit, "source": self.source, "basis": self.basis}
        if self.note:
            d["note"] = self.note
        return d


@dataclass(frozen=True)
class Budget:
    """What a build must meet on a target; ``None`` = not budgeted."""

    flops_keep: Optional[float] = None
    latency_p50_ms: Optional[float] = None
    latency_p90_ms: Optional[float] = None
    peak_memory_mb: Optional[float] = None
    model_size_mb: Optional[float] = None
    max_accuracy_drop: Optional[float] = None
    rationale: Optional[str] = None
    objective: Optional[str] = None  # least-pruning | fastest; None = least-pruning

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in BUDGET_KEYS}
        d["objective"] = self.objective
        d["rationale"] = self.rationale
        return d


@dataclass(frozen=True)
class Target:
    name: str
    title: str
    platform: str
    source_path: str
    runtime: dict = field(hash=False)
    artifacts: list = field(hash=False)
    threads: int
    width_multiple: int
    onnx_opset: int
    device: dict = field(hash=False)
    budget: Budget
    notes: Optional[str] = None

    def fact(self, key: str, default: Any = None) -> Any:
        """The value of device fact ``key`` (or ``default`` when the profile lacks it)."""
        f = self.device.get(key)
        return default if f is None else f.value

    def peak_compute(self, dtype: str = "fp32") -> float:
        """Peak GFLOP/s (fp32) or GOP/s (int8) of the cores used at ``self.threads`` threads."""
        return float(self.fact("peak_int8_gops" if dtype == "int8" else "peak_fp32_gflops"))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "platform": self.platform,
            "source_path": self.source_path,
            "notes": self.notes,
            "runtime": dict(self.runtime),
            "artifacts": list(self.artifacts),
            "threads": self.threads,
            "width_multiple": self.width_multiple,
            "onnx_opset": self.onnx_opset,
            "device": {k: f.to_dict() for k, f in self.device.items()},
            "budget": self.budget.to_dict(),
        }


def _builtin_dir():
    return resources.files(__name__)


FAMILIES_FILE = "families.toml"  # family table beside the profiles; not a profile itself


def builtin_targets() -> list[str]:
    """Names of the built-in profiles, sorted."""
    return sorted(p.name[: -len(".toml")] for p in _builtin_dir().iterdir()
                  if p.name.endswith(".toml") and p.name != FAMILIES_FILE)  # fmt: skip


def user_targets(folder: "str | Path | None" = None) -> dict[str, Path]:
    """Profiles in ``folder`` (default: the working directory): ``<name>.toml`` files that parse as a target
    profile whose ``name`` is the file's stem (e.g. ``rpi4-measured.toml`` written by ``edgeprune calibrate``).
    Other TOML files there (configs, pyproject.toml) are ignored; built-in names are not shadowed."""
    folder = Path.cwd() if folder is None else Path(folder)
    out: dict[str, Path] = {}
    builtin = set(builtin_targets())
    try:
        files = sorted(folder.glob("*.toml"))
    except OSError:
        return out
    for p in files:
        if p.stem in builtin or not _NAME_RE.match(p.stem):
            continue
        try:
            if _parse(p.read_text(encoding="utf-8"), str(p), expect_name=p.stem):
                out[p.stem] = p
        except (OSError, UnicodeDecodeError, ConfigError):
            continue
    return out


def list_targets() -> list[str]:
    """Names of the built-in profiles and of the user profiles in the working directory, sorted."""
    return sorted(set(builtin_targets()) | set(user_targets()))


def load_target(name_or_path: "str | Path") -> Target:
    """Load a profile: a built-in by name, a user profile in the working directory by name
    (``<name>.toml``, see :func:`user_targets`), or any profile TOML by path."""
    s = str(name_or_path)
    looks_like_path = isinstance(name_or_path, Path) or s.endswith(".toml") or "/" in s or "\\" in s
    if looks_like_path:
        return _load_file(Path(s))
    if s in builtin_targets():
        res = _builtin_dir().joinpath(f"{s}.toml")
        return _parse(res.read_text(encoding="utf-8"), f"<builtin>/{s}.toml", expect_name=s)
    user = user_targets()
    if s in user:
        return _load_file(user[s])
    own = Path(f"{s}.toml")
    if own.is_file() and _NAME_RE.match(s):  # ./<name>.toml that does not parse: show why, not "unknown"
        return _parse(own.read_text(encoding="utf-8", errors="replace"), str(own), expect_name=s)
    fam = resolve_family(s)
    if fam is not None:
        return load_target(fam.default)
    raise InputError(f"unknown target {s!r}{_did_you_mean(s)}; choose one of {list_targets()}, a family "
                     f"({', '.join(families())}) or a path to a .toml profile")


# ----------------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Family:
    """A name that stands for a kind of board (``jetson``): resolves to ``default``, the current board."""

    name: str
    title: str
    default: str
    aliases: tuple = ()
    why: str = ""

    def members(self) -> list[str]:
        """The profiles of this family (built-in and in the working directory), the default first."""
        names = [n for n in list_targets() if n != self.default and _platform_of(n) == self.name]
        return [self.default, *names]


def _platform_of(name: str) -> Optional[str]:
    try:
        return load_target(name).platform
    except (ConfigError, InputError):
        return None


def families() -> dict[str, Family]:
    """The target families of ``families.toml``, by name (checked: each default is a built-in profile of the
    family's platform, no alias shadows a profile or another family)."""
    where = f"<builtin>/{FAMILIES_FILE}"
    try:
        data = tomllib.loads(_builtin_dir().joinpath(FAMILIES_FILE).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: malformed TOML ({e}); fix the syntax") from None
    builtin, out, seen = builtin_targets(), {}, set()
    for name, raw in data.items():
        _typed(where, name, raw, (dict,), "a table [family]")
        _check_keys(where, f"{name}.", raw, {"title", "default", "aliases", "why"}, {"title", "default"})
        if name not in PLATFORMS:
            raise _err(where, name, f"must be a platform, one of {list(PLATFORMS)}")
        default = _typed(where, f"{name}.default", raw["default"], (str,), "a string")
        if default not in builtin:
            raise _err(where, f"{name}.default", f"= {default!r} is not a built-in profile")
        aliases = tuple(_typed(where, f"{name}.aliases", raw.get("aliases", []), (list,), "a list of strings"))
        for a in (name, *aliases):
            if a in builtin or a in seen:
                raise _err(where, f"{name}.aliases", f"has {a!r}, which is already a profile or family name")
            seen.add(a)
        out[name] = Family(name, raw["title"], default, aliases, raw.get("why", ""))
    for f in out.values():
        if load_target(f.default).platform != f.name:
            raise _err(where, f"{f.name}.default", f"= {f.default!r} is not a {f.name} profile")
    return out


def resolve_family(name: str) -> Optional[Family]:
    """The family that ``name`` (a family name or an alias, any case) stands for, or None. An existing
    profile of that name (built-in or in the working directory) is not a family."""
    key = str(name).strip().lower()
    if key in builtin_targets() or key in user_targets():
        return None
    return next((f for f in families().values() if key == f.name or key in f.aliases), None)


def _did_you_mean(name: str) -> str:
    words = list_targets() + [w for f in families().values() for w in (f.name, *f.aliases)]
    close = difflib.get_close_matches(str(name).lower(), words, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _load_file(p: Path) -> Target:
    if not p.is_file():
        raise InputError(f"target profile file {p} not found; pass an existing .toml file or one of {list_targets()}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read target profile {p} ({e}); check the file's permissions and encoding") from None
    return _parse(text, str(p), expect_name=None)


# ----------------------------------------------------------------------------------- parsing


def _err(where: str, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{where}: key '{key}' {msg}")


def _check_keys(where: str, prefix: str, table: dict, allowed: set, required: set = frozenset()):
    for k in table:
        if k not in allowed:
            raise _err(where, prefix + k, f"is unknown; allowed keys: {sorted(allowed)} (typo?)")
    for k in sorted(required):
        if k not in table:
            raise _err(where, prefix + k, "is missing; add it (see edgeprune/targets/rpi4.toml for the schema)")


def _typed(where: str, key: str, value: Any, types: tuple, what: str) -> Any:
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        raise _err(where, key, f"must be {what}, got {type(value).__name__} {value!r}")
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        raise _err(where, key, f"= {value} must be a finite number")
    return value


def _num(where, key, v, *, lo=None, hi=None, integer=False):
    if integer:
        _typed(where, key, v, (int,), "an integer")
    else:
        _typed(where, key, v, (int, float), "a number")
    if lo is not None and v < lo or hi is not None and v > hi:
        raise _err(where, key, f"= {v} is out of range [{lo}, {hi}]")
    return v


def _parse(text: str, where: str, expect_name: Optional[str]) -> Target:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: malformed TOML ({e}); fix the syntax") from None

    _check_keys(where, "", data, TOP_KEYS, {"name", "title", "platform", "runtime", "device", "budget"})
    name = _typed(where, "name", data["name"], (str,), "a string")
    if not _NAME_RE.match(name):
        raise _err(where, "name", f"= {name!r} must be lowercase letters, digits, '-' or '_'")
    if expect_name is not None and name != expect_name:
        raise _err(where, "name", f"= {name!r} must equal the file name {expect_name!r}")
    title = _typed(where, "title", data["title"], (str,), "a string")
    platform = _typed(where, "platform", data["platform"], (str,), "a string")
    if platform not in PLATFORMS:
        raise _err(where, "platform", f"= {platform!r} must be one of {list(PLATFORMS)}")
    notes = data.get("notes")
    if notes is not None:
        _typed(where, "notes", notes, (str,), "a string")

    # runtime
    rt = _typed(where, "runtime", data["runtime"], (dict,), "a table [runtime]")
    _check_keys(where, "runtime.", rt, RUNTIME_KEYS, RUNTIME_KEYS - {"notes"})
    preferred = _typed(where, "runtime.preferred", rt["preferred"], (str,), "a string")
    if preferred not in RUNTIMES:
        raise _err(where, "runtime.preferred", f"= {preferred!r} must be one of {list(RUNTIMES)}")
    arts = _typed(where, "runtime.artifacts", rt["artifacts"], (list,), "a list of strings")
    if not arts:
        raise _err(where, "runtime.artifacts", f"must list at least one of {list(ARTIFACTS)}")
    for a in arts:
        if a not in ARTIFACTS:
            raise _err(where, "runtime.artifacts", f"has unknown artifact {a!r}; choose from {list(ARTIFACTS)}")
    if len(set(arts)) != len(arts):
        raise _err(where, "runtime.artifacts", "lists an artifact twice; remove the duplicate")
    threads = _num(where, "runtime.threads", rt["threads"], lo=1, hi=256, integer=True)
    width_multiple = _num(where, "runtime.width_multiple", rt["width_multiple"], lo=1, hi=256, integer=True)
    onnx_opset = _num(where, "runtime.onnx_opset", rt["onnx_opset"], lo=7, hi=30, integer=True)

    # device
    dev = _typed(where, "device", data["device"], (dict,), "a table [device]")
    _check_keys(where, "device.", dev, set(DEVICE_FACTS), {k for k, v in DEVICE_FACTS.items() if v[2]})
    device: dict[str, Fact] = {}
    for k, raw in dev.items():
        key = f"device.{k}"
        unit, types, _ = DEVICE_FACTS[k]
        _typed(where, key, raw, (dict,), "an inline table { value = ..., source = \"...\", basis = \"...\" }")
        _check_keys(where, key + ".", raw, FACT_KEYS, {"value", "source", "basis"})
        tname = "a boolean" if types == (bool,) else "a string" if types == (str,) else "a number"
        value = _typed(where, key + ".value", raw["value"], types, tname)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise _err(where, key + ".value", f"= {value} must be positive")
        src = _typed(where, key + ".source", raw["source"], (str,), "a string")
        if not src.strip():
            raise _err(where, key + ".source", "is empty; say where the number comes from")
        basis = _typed(where, key + ".basis", raw["basis"], (str,), "a string")
        if basis not in BASES:
            raise _err(where, key + ".basis", f"= {basis!r} must be one of {list(BASES)}")
        u = raw.get("unit", unit)
        if u != unit:
            raise _err(where, key + ".unit", f"= {u!r} must be {unit!r} (convert the value)")
        note = raw.get("note")
        if note is not None:
            _typed(where, key + ".note", note, (str,), "a string")
        device[k] = Fact(value=value, unit=unit, source=src, basis=basis, note=note)

    # budget
    bud = _typed(where, "budget", data["budget"], (dict,), "a table [budget]")
    _check_keys(where, "budget.", bud, set(BUDGET_KEYS) | {"rationale", "objective"})
    bvals: dict[str, Any] = {}
    for k in BUDGET_KEYS:
        if k in bud:
            hi = 1.0 if k == "flops_keep" else None
            v = _num(where, f"budget.{k}", bud[k], lo=0, hi=hi)
            if k != "max_accuracy_drop" and v <= 0:
                raise _err(where, f"budget.{k}", f"= {v} must be positive")
            bvals[k] = float(v)
    if "rationale" in bud:
        bvals["rationale"] = _typed(where, "budget.rationale", bud["rationale"], (str,), "a string")
    if "objective" in bud:
        obj = _typed(where, "budget.objective", bud["objective"], (str,), "a string")
        if obj not in OBJECTIVES:
            raise _err(where, "budget.objective", f"= {obj!r} must be one of {list(OBJECTIVES)}")
        bvals["objective"] = obj
    budget = Budget(**bvals)
    if budget.latency_p50_ms and budget.latency_p90_ms and budget.latency_p90_ms < budget.latency_p50_ms:
        raise _err(where, "budget.latency_p90_ms", "is below budget.latency_p50_ms; p90 can never be below p50")

    return Target(
        name=name,
        title=title,
        platform=platform,
        source_path=where,
        runtime={k: rt[k] for k in rt},
        artifacts=list(arts),
        threads=threads,
        width_multiple=width_multiple,
        onnx_opset=onnx_opset,
        device=device,
        budget=budget,
        notes=notes,
    )
