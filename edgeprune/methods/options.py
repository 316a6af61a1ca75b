"""Per-method options, declared once as a dataclass and validated in one place.

A method declares ``options_cls``: a ``@dataclass`` whose fields all have defaults and
``metadata={"help": ...}``. Optional metadata rules: ``choices`` (allowed values), ``min`` /
``max`` (inclusive bounds), ``gt`` (exclusive lower bound), ``from_run`` (the default ``None``
means "take it from the run's training options"; the text says which). Anything else is
checked in the dataclass's ``__post_init__`` (raise ``ValueError``). :func:`build_options`
turns a plain dict (TOML ``[method_options]``, ``--method-option k=v``, the Python API,
``compare``'s ``NAME[k=v]``) into a validated instance, and :func:`describe_options` is what
``edgeprune methods`` and the docs print: both read the same declaration.

This module imports nothing of edgeprune but its errors, so the config can use it.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any

from ..errors import ConfigError


@dataclass
class NoOptions:
    """A method without options."""


def option(default, help: str, **rules):  # noqa: A002 - the metadata key is "help"
    """``field(default=..., metadata={"help": help, **rules})`` (mutable defaults go through a factory)."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **rules})
    return field(default=default, metadata={"help": help, **rules})


def _hints(cls) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to the default's type
        return {}


def _kinds(tp) -> tuple[list, bool, tuple | None]:
    """(allowed plain types, None allowed, Literal values) of an annotation."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return [], False, typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        types_, none, lits = [], False, None
        for a in typing.get_args(tp):
            if a is type(None):
                none = True
                continue
            t, _, lit = _kinds(a)
            types_ += t
            lits = lit or lits
        return types_, none, lits
    return [origin or tp], False, None


def _field_default(f: dataclasses.Field):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return MISSING


def _expect(method: str, key: str, value, what: str) -> ConfigError:
    return ConfigError(f"method {method!r} option {key}={value!r}: expected {what}")


def _coerce(method: str, f: dataclasses.Field, tp, value):
    """``value`` checked against the field's type and metadata rules (ints widen to floats)."""
    meta = f.metadata or {}
    raw = value  # messages name the value as it was given
    default = _field_default(f)
    types_, none_ok, lits = _kinds(tp) if tp is not None else ([type(default)], default is None, None)
    if value is None:
        if none_ok or default is None:
            return None
        raise _expect(method, f.name, value, "a value (this option has no run default)")
    choices = meta.get("choices") or lits
    if choices is not None:
        if value not in choices:
            raise _expect(method, f.name, value, f"one of {list(choices)}")
        return value
    if bool in types_:
        if not isinstance(value, bool):
            raise _expect(method, f.name, value, "true or false")
        return value
    if int in types_ or float in types_:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _expect(method, f.name, value, "a number")
        if float not in types_:
            if float(value) != int(value):
                raise _expect(method, f.name, value, "an integer")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise _expect(method, f.name, raw, "a finite number")
        lo, hi, gt = meta.get("min"), meta.get("max"), meta.get("gt")
        if lo is not None and value < lo:
            raise _expect(method, f.name, raw, f"a value >= {lo}")
        if gt is not None and value <= gt:
            raise _expect(method, f.name, raw, f"a value > {gt}")
        if hi is not None and value > hi:
            raise _expect(method, f.name, raw, f"a value <= {hi}")
        return value
    if str in types_:
        if not isinstance(value, str):
            raise _expect(method, f.name, value, "a string")
        return value
    if list in types_ or tuple in types_:
        if not isinstance(value, (list, tuple)):
            raise _expect(method, f.name, value, "a list")
        return type(default)(value) if isinstance(default, (list, tuple)) else list(value)
    return value


def build_options(cls, options: dict | None, method: str):
    """A validated ``cls`` instance from ``options`` (unknown keys, wrong types and out-of-range values
    are :class:`~edgeprune.errors.ConfigError`s that name the method, the key and what is expected)."""
    options = dict(options or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise ConfigError(f"method {method!r} has no option(s) {unknown}; options: {known} "
                          f"(see `edgeprune methods`)")
    hints = _hints(cls)
    values = {k: _coerce(method, fields[k], hints.get(k), v) for k, v in options.items()}
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"method {method!r} options {values}: {e}") from None


def describe_options(cls) -> list[dict]:
    """``[{"name", "type", "default", "help", ...rules}]`` in declaration order (for `edgeprune methods` and docs)."""
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata or {})
        tp = hints.get(f.name)
        out.append({"name": f.name, "type": _type_name(tp, _field_default(f)), "default": _field_default(f),
                    "help": meta.pop("help", ""), **{k: v for k, v in meta.items()}})
    return out


def _type_name(tp, default) -> str:
    if tp is None:
        return type(default).__name__
    types_, none, lits = _kinds(tp)
    if lits:
        return " | ".join(repr(v) for v in lits)
    name = " | ".join(getattr(t, "__name__", str(t)) for t in types_)
    return f"{name} | None" if none else name


def parse_value(text: str):
    """A command-line value as TOML reads it (``0.1``, ``true``, ``"log"``, ``[1, 2]``); a bare word stays a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignments(items: list[str] | None) -> dict:
    """``["gamma=0.1", "branches=false"]`` -> ``{"gamma": 0.1, "branches": False}``."""
    out = {}
    for item in items or []:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--method-option {item!r}: write KEY=VALUE, e.g. --method-option gamma=0.1")
        out[key.strip()] = parse_value(text.strip())
    return out


def to_dict(opts) -> dict:
    return dataclasses.asdict(opts) if dataclasses.is_dataclass(opts) else dict(opts or {})
