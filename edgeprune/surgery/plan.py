"""PruningPlan: the JSON contract between pruning methods and the surgery.

A plan says, per coupled group (named by its root layer), which channel indices are kept,
which residual branches are dropped whole, and the width multiple used to round kept
widths. Methods produce plans; they never cut modules themselves.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

PLAN_VERSION = 1


@dataclass
class PruningPlan:
    keep: dict[str, list[int]] = field(default_factory=dict)  # group -> sorted kept channel indices
    dropped: list[str] = field(default_factory=list)  # Residual blocks whose branch is removed
    width_multiple: int = 1
    method: str = ""
    meta: dict = field(default_factory=dict)  # method-specific facts (scores, budget, ...)

    def kept_widths(self, graph) -> dict[str, int]:
        widths = graph.full_keep()
        widths.update({g: len(idx) for g, idx in self.keep.items()})
        return widths

    def predicted_cost(self, graph) -> dict[str, int]:
        """Exact parameters and MACs of the compact model this plan yields."""
        return graph.cost_of_sets({g: set(idx) for g, idx in self.keep.items()}, self.dropped)

    def removed(self, graph) -> dict[str, list[int]]:
        """Group -> removed channel indices (the complement of ``keep``)."""
        out = {}
        for g, idx in self.keep.items():
            kept = set(idx)
            rm = [i for i in range(graph.groups[g].size) if i not in kept]
            if rm:
                out[g] = rm
        return out

    def validate(self, graph) -> None:
        """Raise :class:`InputError` unless the plan fits ``graph``: known groups and branches, indices in range,
        every layer keeps a channel, and kept widths are multiples of ``width_multiple`` (or the full width)."""
        for g, idx in self.keep.items():
            if g not in graph.groups:
                raise InputError(f"plan names group {g!r}, which the model does not have (plan made for another model?)")
            size = graph.groups[g].size
            if not idx:
                raise InputError(f"plan keeps no channel of group {g!r}; keep at least one")
            if len(set(idx)) != len(idx) or min(idx) < 0 or max(idx) >= size:
                raise InputError(f"plan for group {g!r} has repeated or out-of-range indices (size {size})")
            m = max(1, int(self.width_multiple))
            if len(idx) % m and len(idx) != size:
                raise InputError(
                    f"plan keeps {len(idx)} channels of group {g!r}: not a multiple of the plan's width_multiple {m} "
                    f"nor the full width {size}; round it up (edgeprune.surgery.round_width)"
                )
        for b in self.dropped:
            if b not in graph.branches:
                raise InputError(f"plan drops branch {b!r}, which is not a droppable residual branch of the model")
        for layer, g, roots in _owned_parts(graph):
            if g in self.keep and not set(roots) & set(self.keep[g]):
                raise InputError(f"plan removes every output channel of layer {layer} (group {g}); keep at least one")

    def to_dict(self) -> dict:
        return {
            "version": PLAN_VERSION,
            "method": self.method,
            "width_multiple": self.width_multiple,
            "keep": {g: [int(i) for i in idx] for g, idx in self.keep.items()},
            "dropped": list(self.dropped),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "PruningPlan":
        if not isinstance(d, dict) or d.get("version") != PLAN_VERSION:
            raise InputError(f"not an edgeprune pruning plan (version {PLAN_VERSION} expected)")
        return cls(
            keep={g: [int(i) for i in idx] for g, idx in d.get("keep", {}).items()},
            dropped=list(d.get("dropped", [])),
            width_multiple=int(d.get("width_multiple", 1)),
            method=d.get("method", ""),
            meta=d.get("meta", {}),
        )

    def save(self, path: Path) -> None:
        from ..runfolder import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> "PruningPlan":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"cannot read pruning plan {path}: {e}") from None


def round_width(n: int, multiple: int, size: int) -> int:
    """Round a kept width up to a multiple (never fewer channels), capped at the group size."""
    n = max(1, int(n))
    if multiple > 1:
        n = int(math.ceil(n / multiple) * multiple)
    return min(n, size)


def plan_from_scores(
    graph,
    scores: dict[str, np.ndarray],
    widths: dict[str, int],
    *,
    width_multiple: int = 1,
    dropped: list[str] | tuple = (),
    method: str = "",
    meta: dict | None = None,
) -> PruningPlan:
    """Keep the highest-scoring channels of each group, widths rounded up to the multiple.

    Ties break towards the lower index, so the same scores always give the same plan.
    """
    keep = {}
    for g, grp in graph.groups.items():
        n = round_width(widths.get(g, grp.size), width_multiple, grp.size)
        if n >= grp.size:
            continue
        s = np.asarray(scores[g], dtype=np.float64)
        order = np.lexsort((np.arange(len(s)), -s))  # by score desc, then index asc
        keep[g] = set(int(i) for i in order[:n])
    # a group spanning several layers (concat feeding a residual add) must leave each layer
    # at least its best channel; the width is then rounded up again to the multiple
    for _, g, roots in _owned_parts(graph):
        if g in keep and not keep[g] & set(roots):
            keep[g].add(max(roots, key=lambda r: (scores[g][r], -r)))
    for g in keep:
        _round_up_kept(keep[g], np.asarray(scores[g], dtype=np.float64), width_multiple, graph.groups[g].size)
    keep = {g: sorted(v) for g, v in keep.items() if len(v) < graph.groups[g].size}
    return PruningPlan(keep, list(dropped), width_multiple, method, dict(meta or {}))


def _round_up_kept(kept: set[int], s: np.ndarray, multiple: int, size: int) -> None:
    """Add the best-scoring channels not kept until the width is a multiple (or the full size)."""
    goal = round_width(len(kept), multiple, size)
    for i in np.lexsort((np.arange(len(s)), -s)):
        if len(kept) >= goal:
            break
        kept.add(int(i))


def _owned_parts(graph):
    """(layer, group, root indices) for every layer that owns only part of a group's channels."""
    for lc in graph.layers.values():
        for g, roots in lc.out_parts:
            if len(roots) < graph.groups[g].size:
                yield lc.name, g, roots
