"""What a resumed comparison may reuse: the rows of a committed ``results.json``, and when a seed's dense phase
can be skipped.

The harness's ``cache/`` (dense checkpoints, ONNX files, ``rows.jsonl``) is not committed, so a study resumed on
another machine would otherwise redo every row. A committed row is restored only when it can be trusted to be the
row this run would compute: the same row fingerprint (data, model, training budget), a method, level and seed of
this run, and, where the row recorded them, the same resolved method options (a default changed since does not
re-label old rows). Rows older than the per-row options are restored with a warning, counted apart.
"""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from pathlib import Path

from .config import DENSE_FT, CompareConfig, MethodSpec, epoch_plan, fingerprint_of, method_options


def row_key(method: str, level: float, seed: int) -> str:
    return f"{method}|{level:g}|{seed}"


def resolved_options(method) -> dict:
    """A method instance's options as resolved (defaults included), scalars only: what a row records."""
    opts = getattr(method, "opts", None)
    return {k: v for k, v in (asdict(opts) if is_dataclass(opts) else {}).items()
            if isinstance(v, (int, float, str, bool, type(None)))}


def _spec_options(specs: list[MethodSpec], cfg: CompareConfig) -> dict[str, dict | None]:
    from ..methods import get_method

    out: dict[str, dict | None] = {}
    for s in specs:
        try:
            out[s.label] = resolved_options(get_method(s.name, method_options(s, cfg)))
        except Exception:  # noqa: BLE001 - a spec that cannot be built restores nothing; the run reports it
            out[s.label] = None
    return out


def restore_rows(results: Path, cfg: CompareConfig, specs: list[MethodSpec], row_fp: str,
                 done: dict[str, dict]) -> dict[str, int]:
    """Add to ``done`` the finished rows of ``results`` (a committed ``results.json``) that this run would compute
    and ``done`` lacks; return ``{"restored": n, "unverified": m}`` (m of the n recorded no options).

    Restored rows keep their measurements, latency included (flagged ``latency_restored``: it was measured in the
    earlier run, not beside this run's models); they have no model in the cache."""
    counts = {"restored": 0, "unverified": 0}
    if not results.is_file():
        return counts
    try:
        blob = json.loads(results.read_text())
        conf = blob["meta"]["config"]
        fp = fingerprint_of(conf, *cfg.ROW_KEYS)
        rows = list(blob.get("rows", []))
    except (OSError, ValueError, KeyError, TypeError):
        return counts
    if fp != row_fp:
        return counts
    options = _spec_options(specs, cfg)
    levels = {round(float(lv), 10) for lv in cfg.levels}
    for r in rows:
        try:
            method, level, seed = r["method"], round(float(r["level"]), 10), int(r["seed"])
        except (KeyError, TypeError, ValueError):
            continue
        key = row_key(method, level, seed)
        if key in done or r.get("error") or seed not in cfg.seeds:
            continue
        if method not in ("dense", DENSE_FT):
            if method not in options or options[method] is None or level not in levels:
                continue
            recorded = (r.get("details") or {}).get("options")
            if recorded is not None and recorded != options[method]:
                continue  # run with other options (e.g. a default changed since): recompute
            counts["unverified"] += recorded is None
        row = {**r, "_fp": row_fp, "restored": True}
        row.pop("_onnx", None)
        if row.get("latency_ms") is not None:
            row["latency_restored"] = True
        done[key] = row
        counts["restored"] += 1
    return counts


def needs_dense_weights(specs: list[MethodSpec], cfg: CompareConfig, done: dict[str, dict], seed: int) -> bool:
    """Whether a row of this seed still to run starts from the trained dense weights (dense+ft always does);
    ``--finished-only`` runs nothing. A method that cannot say counts as needing them."""
    if cfg.finished_only:
        return False
    ft_epochs = cfg.finetune_epochs if cfg.epoch_budget == "equal-finetune" else cfg.post_dense_epochs
    if cfg.dense_ft and ft_epochs > 0 and row_key(DENSE_FT, 0.0, seed) not in done:
        return True
    for s in specs:
        if all(row_key(s.label, lv, seed) in done for lv in cfg.levels):
            continue
        try:
            if not epoch_plan(s, cfg)["from_scratch"]:
                return True
        except Exception:  # noqa: BLE001 - the row loop reports the method's error
            return True
    return False
