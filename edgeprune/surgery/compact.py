"""Turn a model + PruningPlan into a smaller dense model, prove it equal, save and replay it.

* :func:`compact` cuts the kept channels out with Torch-Pruning (every coupled layer at
  once) and replaces dropped residual branches by their activation alone.
* :func:`masked` is the reference: the original model with the removed channels zeroed
  where they are consumed (the input slices of the next conv/linear layers) and dropped
  branches answering zeros. :func:`verify` compares both on real inputs.
* :func:`save_compact` / :func:`load_compact` store architecture id + plan + compact
  ``state_dict``; loading rebuilds the compact structure from the architecture and the
  plan and loads tensors with ``torch.load(weights_only=True)``: no pickled modules.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import InputError, UnsupportedModelError, VerificationError
from ..models import DroppedBranch, Residual
from .graph import ModelGraph, analyze, one_thread
from .plan import PruningPlan

REL_TOL = 1e-5


class ZeroBranch(nn.Module):
    """Stands in for a dropped branch in the masked reference: contributes nothing."""

    def forward(self, x):
        return torch.zeros_like(x)


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def _tp_group(graph: ModelGraph, model: nn.Module, dg, group: str, idxs: list[int]):
    root = model.get_submodule(group)
    handler = dg.get_pruner_of_module(root).prune_out_channels
    return dg.get_pruning_group(root, handler, idxs)


def compact(model: nn.Module, plan: PruningPlan, example: torch.Tensor, graph: ModelGraph | None = None) -> nn.Module:
    """Return a new, smaller dense model (``model`` is not changed)."""
    import torch_pruning as tp

    new = copy.deepcopy(model).eval()
    graph = graph or analyze(new, example)
    plan.validate(graph)
    removed = plan.removed(graph)
    if removed:
        with one_thread():
            dg = tp.DependencyGraph().build_dependency(new, example_inputs=example, verbose=False)
        for g, idxs in removed.items():
            try:
                group = _tp_group(graph, new, dg, g, idxs)
                group.prune()
            except Exception as e:  # torch-pruning raises bare errors for patterns it cannot cut
                raise UnsupportedModelError(f"cannot remove channels of group {g}: {type(e).__name__}: {e}") from None
    for b in plan.dropped:
        block = new.get_submodule(b)
        assert isinstance(block, Residual)
        _set_module(new, b, DroppedBranch(block.act))
    return new


def masked(model: nn.Module, plan: PruningPlan, example: torch.Tensor, graph: ModelGraph | None = None) -> nn.Module:
    """The original model computing what the plan keeps: removed channels zeroed where consumed."""
    import torch_pruning as tp

    ref = copy.deepcopy(model).eval()
    graph = graph or analyze(ref, example)
    plan.validate(graph)
    removed = plan.removed(graph)
    if removed:
        with one_thread():
            dg = tp.DependencyGraph().build_dependency(ref, example_inputs=example, verbose=False)
        with torch.no_grad():
            for g, idxs in removed.items():
                for dep, dep_idxs in _tp_group(graph, ref, dg, g, idxs):
                    mod = dep.target.module
                    if dg.is_out_channel_pruning_fn(dep.handler) or not isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)):
                        continue
                    if isinstance(mod, nn.modules.conv._ConvNd) and mod.groups > 1:
                        continue  # depthwise: coupled in==out, its consumer is zeroed instead
                    ix = torch.as_tensor([int(i) for i in dep_idxs], dtype=torch.long)
                    if isinstance(mod, nn.modules.conv._ConvTransposeNd):
                        mod.weight[ix] = 0  # (in, out, k...)
                    else:
                        mod.weight[:, ix] = 0  # (out, in, k...)
    for b in plan.dropped:
        ref.get_submodule(b).branch = ZeroBranch()
    return ref


def verify(reference: nn.Module, candidate: nn.Module, inputs: torch.Tensor, rel_tol: float = REL_TOL) -> dict:
    """Compare two models on real inputs; raise :class:`VerificationError` past ``rel_tol``."""
    reference.eval()
    candidate.eval()
    with torch.no_grad():
        a = reference(inputs)
        b = run_traced(candidate, inputs)
    if a.shape != b.shape:
        raise UnsupportedModelError(
            f"compact model output shape {tuple(b.shape)} != masked model {tuple(a.shape)}: the forward() hard-codes a "
            "shape (e.g. view(-1, C*H*W)); derive it from the tensor instead (x.flatten(1))"
        )
    max_abs = float((a - b).abs().max())
    scale = float(a.abs().max()) or 1.0
    rel = max_abs / scale
    result = {"max_abs_diff": max_abs, "rel_diff": rel, "rel_tol": rel_tol, "n_inputs": int(inputs.shape[0])}
    if not rel <= rel_tol:
        raise VerificationError(
            f"compact model differs from the masked model: relative difference {rel:.2e} > {rel_tol:.0e} "
            "(a surgery bug: please report it with the model and plan)"
        )
    return result


def run_traced(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Run ``model``; if it fails, name the module where it failed and the likely cause."""
    last: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: last.append(n))
             for n, m in model.named_modules() if n and not list(m.children())]
    try:
        return model(inputs)
    except RuntimeError as e:
        where = last[-1] if last else "the model"
        kind = type(model.get_submodule(where)).__name__ if last else ""
        raise UnsupportedModelError(
            f"the compact model fails in module {where} ({kind}): {str(e).splitlines()[0]}; "
            "a hard-coded shape in forward() (e.g. view(-1, C*H*W)) is the usual cause: use x.flatten(1)"
        ) from None
    finally:
        for h in hooks:
            h.remove()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def compact_and_verify(
    model: nn.Module, plan: PruningPlan, example: torch.Tensor, inputs: torch.Tensor, graph: ModelGraph | None = None
) -> tuple[nn.Module, dict]:
    """Compact, then check against the masked model and the plan's predicted parameter count."""
    with one_thread():
        return _compact_and_verify(model, plan, example, inputs, graph)


def _compact_and_verify(model, plan, example, inputs, graph):
    graph = graph or analyze(model, example)
    small = compact(model, plan, example, graph)
    ref = masked(model, plan, example, graph)
    report = verify(ref, small, inputs)
    predicted = plan.predicted_cost(graph)
    actual = count_params(small)
    if predicted["params"] != actual:
        raise VerificationError(f"compact model has {actual} parameters, the plan predicted {predicted['params']}")
    report.update({"params": actual, "macs": predicted["macs"], "dense": graph.dense_cost()})
    return small, report


# ------------------------------------------------------------------ replay

def save_compact(path: Path, arch: dict, plan: PruningPlan, model: nn.Module) -> None:
    """Save ``{arch, plan, state_dict}``: everything needed to replay the compact model."""
    from ..runfolder import atomic_write_bytes

    buf = io.BytesIO()
    torch.save({"format": "edgeprune-compact/1", "arch": arch, "plan": plan.to_dict(), "state_dict": model.state_dict()}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def read_checkpoint(path: Path) -> dict:
    try:
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"model file {path} not found") from None
    except Exception as e:
        raise InputError(f"model file {path} is corrupt or not an edgeprune model ({type(e).__name__}); rebuild it") from None
    if not isinstance(blob, dict) or "state_dict" not in blob or "arch" not in blob:
        raise InputError(f"model file {path} is not an edgeprune model (no arch/state_dict); rebuild it")
    return blob


def load_compact(path: Path, build: Callable[[dict], nn.Module], example_for: Callable[[dict], torch.Tensor]) -> tuple[nn.Module, PruningPlan, dict]:
    """Replay: rebuild the architecture, re-apply the plan's structure, load the weights.

    ``build(arch)`` returns the original (unpruned) architecture; ``example_for(arch)``
    a batch-1 example input for the dependency analysis.
    """
    blob = read_checkpoint(path)
    arch = blob["arch"]
    plan = PruningPlan.from_dict(blob.get("plan") or {"version": 1})
    base = build(arch)
    small = compact(base, plan, example_for(arch)) if (plan.keep or plan.dropped) else base
    try:
        small.load_state_dict(blob["state_dict"], strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise InputError(f"model file {path} does not match its architecture and plan: {first[-1].strip() if first else e}") from None
    return small.eval(), plan, arch
