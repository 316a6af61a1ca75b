"""The build guard: before the pruning method spends its training budget, predict how much of the
dense model one-shot magnitude pruning can remove (s*) and warn when the target asks for more.

The limit is a property of *trained* weights (it reads their magnitudes and the loss curvature at
them), so the guard runs on the dense model, right after the train stage and before prune (with
``weights=`` that is before any training at all). ``limit.guard``: ``auto`` (default) runs it when
the model is small enough to be cheap (at most AUTO_MAX_WEIGHTS prunable weights; the quickstart
model takes a few seconds), ``on`` always, ``off`` never. The record goes to ``limit.json``.

What the number means: s* is the fraction of individual weights that one-shot, unstructured
magnitude pruning without fine-tuning can zero before the loss leaves its noise level. The build
removes whole channels (coarser: reaches less) and then fine-tunes (recovers: reaches more), so
the comparison is a warning sign, not a verdict; docs/limit.md has the measured relation.
"""

from __future__ import annotations

import time

from ..runfolder import read_json, write_json

GUARD_FILE = "limit.json"
MODES = ("auto", "on", "off")
#: above this many prunable weights `auto` skips the estimate (SLQ cost grows with the weights x samples)
AUTO_MAX_WEIGHTS = 300_000


def check_mode(mode: str) -> str:
    from ..errors import ConfigError

    if mode not in MODES:
        raise ConfigError(f"limit.guard must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def run_guard(b, train_fingerprint: str) -> dict | None:
    """Estimate s* for the run's dense model (cached per dense model), compare with the target's
    requested removal, warn, and write limit.json. Returns the record (None when off)."""
    mode = check_mode((b.cfg.get("limit") or {}).get("guard", "auto"))
    if mode == "off" or b.task != "classification":
        return None
    path = b.run / GUARD_FILE
    old = read_json(path) if path.is_file() else None
    removal = 1.0 - b.flops_keep
    if old and old.get("train_fingerprint") == train_fingerprint and old.get("mode") == mode:
        rec = {**old, "requested_removal": removal, "beyond": _beyond(old, removal)}
    else:
        rec = _estimate(b, mode, train_fingerprint)
        rec.update(requested_removal=removal, beyond=_beyond(rec, removal))
    write_json(path, rec)
    if rec.get("s_star") is None:
        b.ui.log(f"  pruning limit: {rec['note']}")
    elif rec["beyond"]:
        b.ui.warn(f"the target asks to remove {removal:.0%} of the MACs, beyond the predicted one-shot pruning limit "
                  f"s* = {rec['s_star']:.2f} of this dense model: expect a larger {b.metric_name} drop than at lower "
                  "levels and rely on fine-tuning (see the report's pruning-limit section)")
    else:
        b.ui.log(f"  pruning limit s* = {rec['s_star']:.2f} (one-shot, unstructured); the target removes {removal:.0%} "
                 f"of the MACs ({rec['seconds']:.1f} s)")
    return rec


def _beyond(rec: dict, removal: float) -> bool | None:
    return None if rec.get("s_star") is None else bool(removal > rec["s_star"])


def _estimate(b, mode: str, train_fingerprint: str) -> dict:
    import torch

    from ..stages.common import load_model
    from .estimate import GUARD_SETTINGS, LimitSettings, estimate_limit
    from .slq import prunable_weights

    model, _, _ = load_model(b, "dense.pt")
    D = sum(p.numel() for _, p in prunable_weights(model))
    base = {"mode": mode, "train_fingerprint": train_fingerprint, "D": D, "kind": "one-shot unstructured"}
    if mode == "auto" and D > AUTO_MAX_WEIGHTS:
        return {**base, "s_star": None,
                "note": f"not estimated: {D:,} prunable weights (> {AUTO_MAX_WEIGHTS:,}) make it slow by default; "
                        "set limit.guard = \"on\" (CLI --limit-guard on) to estimate it anyway (minutes)"}
    a = b.arrays
    st = LimitSettings(batch_size=b.cfg["train"]["batch_size"], seed=b.cfg["seed"], **GUARD_SETTINGS)
    cpu0 = time.process_time()
    with torch.enable_grad():
        est = estimate_limit(model, a["x_train"], a["y_train"], task=b.task, settings=st)
    return {**base, "s_star": est.s_star, "epsilon": est.epsilon, "zero_fraction": est.zero_fraction,
            "settings": est.settings, "hvps": est.hvps, "seconds": est.seconds["total"],
            "cpu_seconds": time.process_time() - cpu0, "density": est.density}
