"""An independent masked reference for compacted models (no edgeprune.surgery code inside).

Definition (what "the compact model is correct" means here). Let ``original`` be the dense
model and ``compact`` the smaller model some tool produced from it. Which entries of each
parameter survived is read off the compaction itself, never off a dependency graph: the tool
is run a second time, with the same plan, on a float64 copy of ``original`` whose every
parameter entry holds its own flat index ("tags"). Each parameter of the tagged compact model
then names exactly which original entries it kept. Checked before anything else:

* every compact parameter is a sub-tensor (a cartesian product of kept indices per
  dimension) of the parameter of the same name, and equal to it there, bit for bit;

The masked reference is the original model with every *removed* parameter entry set to zero
(along every dimension: producer weight rows, biases, BatchNorm / PReLU / layer-scale /
embedding entries, and the input columns of consumers). A removed channel is then zero
where it is produced *and* cut where it is consumed (its consumer's input columns are zero),
so whatever an element-wise op leaks into it (BN bias, sigmoid(0) = 0.5) never reaches a kept
value. Ops that mix channels without weights are where masking is not removal:

* LayerNorm over a pruned dimension: the reference LayerNorm computes its statistics over
  the *kept* entries only (this is the definition of "removing channels under a LayerNorm");
* softmax / mean over channels, channel shuffles, hard-coded reshapes, wrong Linear columns
  after a flatten: not masked away, so a compaction that cuts through them wrongly differs
  from the reference and is caught.

Outputs are compared element-wise per output (tuples, lists and dicts are flattened):
relative difference = max |ref - compact| / max |ref| per output, the worst one is reported.
"""

from __future__ import annotations

import copy
import sys
import types
from typing import Callable

import numpy as np
import torch
from torch import nn


def import_torchvision():
    """Import torchvision's pure-Python model zoo next to a CPU-only torch.

    The registry's torchvision wheels are CUDA builds whose ``_C`` ops cannot load here;
    the model definitions need none of them. Registering an empty
    ``torchvision._meta_registrations`` before the first import skips the op registration.
    """
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision

    return torchvision


def tag_model(model: nn.Module) -> nn.Module:
    """A float64 copy whose every parameter entry holds its own flat index."""
    t = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in t.parameters():
            p.copy_(torch.arange(p.numel(), dtype=torch.float64).view_as(p))
    return t


class KeptLayerNorm(nn.Module):
    """LayerNorm whose statistics are taken over the kept entries of its last dimension only."""

    def __init__(self, ln: nn.LayerNorm, kept: torch.Tensor):
        super().__init__()
        self.ln = ln
        self.register_buffer("kept", kept)

    def forward(self, x):
        k = x.index_select(-1, self.kept)
        mean = k.mean(-1, keepdim=True)
        var = k.var(-1, unbiased=False, keepdim=True)
        y = (x - mean) / torch.sqrt(var + self.ln.eps)
        y = y * self.ln.weight if self.ln.weight is not None else y
        return y + self.ln.bias if self.ln.bias is not None else y


class KeptLayerNorm2d(KeptLayerNorm):
    """The same over dim 1 of an NCHW tensor (timm's LayerNorm2d is a LayerNorm subclass)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ReferenceError(AssertionError):
    """The compact model is not a sub-tensor selection of the original (a surgery bug)."""


def kept_indices(original: nn.Module, compact: nn.Module, tagged_compact: nn.Module) -> dict[str, list[np.ndarray]]:
    """Per parameter name: the kept original indices along each dimension (checked as described above)."""
    orig = dict(original.named_parameters())
    tags = dict(tagged_compact.named_parameters())
    real = dict(compact.named_parameters())
    if set(tags) != set(real):
        raise ReferenceError(f"tagged and real compactions differ in parameters: {sorted(set(tags) ^ set(real))[:3]}")
    out = {}
    for name, t in tags.items():
        if name not in orig:
            raise ReferenceError(f"compact parameter {name} has no counterpart in the original")
        o = orig[name]
        if t.dim() != o.dim():
            raise ReferenceError(f"parameter {name} changed rank: {tuple(o.shape)} -> {tuple(t.shape)}")
        flat = t.detach().reshape(-1).to(torch.int64).numpy()
        if flat.size and (flat.min() < 0 or flat.max() >= o.numel()):
            raise ReferenceError(f"parameter {name} holds entries that are not original ones")
        coords = np.unravel_index(flat, tuple(o.shape)) if o.dim() else ()
        kept = [np.unique(c) for c in coords]
        if o.dim():
            grid = np.ravel_multi_index(np.ix_(*kept), tuple(o.shape)).reshape(-1)
            if grid.shape != flat.shape or not np.array_equal(grid, flat):
                raise ReferenceError(f"parameter {name} {tuple(o.shape)} -> {tuple(t.shape)} is not a sub-tensor "
                                     "(entries reordered or mixed)")
        want = o.detach().reshape(-1)[torch.from_numpy(flat)].view_as(real[name])
        if not torch.equal(want, real[name].detach()):
            raise ReferenceError(f"parameter {name}: compact values are not the original ones at the kept indices")
        out[name] = kept
    return out


def masked_reference(original: nn.Module, kept: dict[str, list[np.ndarray]]) -> nn.Module:
    """The original with every removed parameter entry zeroed and LayerNorms over kept entries."""
    ref = copy.deepcopy(original).eval()
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for name, ks in kept.items():
            p = params[name]
            for d, k in enumerate(ks):
                if len(k) == p.shape[d]:
                    continue
                removed = np.setdiff1d(np.arange(p.shape[d]), k)
                p.index_fill_(d, torch.from_numpy(removed), 0.0)
    for mname, m in list(ref.named_modules()):
        if isinstance(m, nn.LayerNorm) and m.weight is not None and f"{mname}.weight" in kept:
            k = kept[f"{mname}.weight"][-1]
            if len(k) < m.weight.shape[-1]:
                if len(m.normalized_shape) != 1:
                    raise ReferenceError(f"LayerNorm {mname} over {m.normalized_shape}: only 1-D is defined here")
                cls = KeptLayerNorm2d if type(m).__name__ == "LayerNorm2d" else KeptLayerNorm
                _set_module(ref, mname, cls(m, torch.from_numpy(k)))
    return ref


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def flat_outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flat_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flat_outputs(v)]
    return []


def compare(reference: nn.Module, compact: nn.Module, x: torch.Tensor) -> float:
    """Worst relative difference over the outputs (inf if their structure or shapes differ)."""
    with torch.no_grad():
        a, b = flat_outputs(reference(x)), flat_outputs(compact(x))
    if len(a) != len(b) or any(u.shape != v.shape for u, v in zip(a, b)):
        return float("inf")
    worst = 0.0
    for u, v in zip(a, b):
        scale = float(u.abs().max()) or 1.0
        worst = max(worst, float((u - v).abs().max()) / scale)
    return worst


def check_against_reference(
    original: nn.Module, compact_fn: Callable[[nn.Module, torch.Tensor], nn.Module], example: torch.Tensor,
    inputs: torch.Tensor, compact: nn.Module | None = None,
) -> dict:
    """Run ``compact_fn(model, example)`` on the original and on its tagged copy; compare with the masked reference.

    ``compact_fn`` must choose channels the same way whatever the weight values (a fixed plan,
    or seeded random importances). Returns ``{"rel_diff", "removed_params"}``; raises
    :class:`ReferenceError` when the compact model is not a selection of the original.
    """
    original = original.eval()
    compact = compact if compact is not None else compact_fn(original, example)
    tagged = compact_fn(tag_model(original), example.double())
    kept = kept_indices(original, compact, tagged)
    ref = masked_reference(original, kept)
    rel = compare(ref, compact.eval(), inputs)
    removed = sum(p.numel() for p in original.parameters()) - sum(p.numel() for p in compact.parameters())
    return {"rel_diff": rel, "removed_params": removed}
