"""Turn a model + PruningPlan into a smaller dense model, prove it equal, save and replay it.

* :func:`compact` cuts the kept channels out with Torch-Pruning (every coupled layer at
  once) and replaces dropped residual branches: a :class:`~edgeprune.models.Residual` by its
  activation alone, a traced ``post(x + f(x))`` block by ``post(x)`` (see ``branches.py``).
* :func:`masked` is the reference: the original model with the removed channels zeroed
  where they are consumed (the input slices of the next conv/linear layers) and dropped
  branches answering zeros. :func:`verify` compares both on real inputs; a failure of the
  compact model names the op and the module where it happened (:func:`run_traced`).
* :func:`probe` compacts a one-channel-narrower copy during ``analyze``, so that shapes
  hard-coded in ``forward()`` are reported before any training.
* :func:`save_compact` / :func:`load_compact` store architecture id + plan + compact
  ``state_dict``; loading rebuilds the compact structure from the architecture and the
  plan and loads tensors with ``torch.load(weights_only=True)``: no pickled modules.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import InputError, UnsupportedModelError, VerificationError
from ..models import DroppedBranch, Residual
from .branches import dropped_block, find_branch
from .rewrite import apply_rewrites
from .layout import column_of, from_channel_first, to_channel_first
from .graph import (
    ModelGraph, _is_depthwise, _is_grouped, analyze_graph, build_tp_graph, layer_norm_dim, one_thread, tolerant_reshape_mapping,
)
from .plan import PruningPlan, _owned_parts
from .trace import OpRecorder

REL_TOL = 1e-5


class KeptStatsLayerNorm(nn.Module):
    """The masked reference of a LayerNorm whose channels are partly removed: statistics over the kept ones.

    Removing channels under a LayerNorm changes its mean and variance; masking cannot express
    that, so this is the definition of the reference: normalize with the kept channels'
    statistics (the removed ones are normalized too, then cut at their consumers).
    """

    def __init__(self, ln: nn.LayerNorm, kept: torch.Tensor, dim: int):
        super().__init__()
        self.ln, self.dim = ln, dim
        self.register_buffer("kept", kept, persistent=False)

    def forward(self, x):
        x = x.movedim(self.dim, -1)
        k = x.index_select(-1, self.kept)
        mean, var = k.mean(-1, keepdim=True), k.var(-1, unbiased=False, keepdim=True)
        y = (x - mean) / torch.sqrt(var + self.ln.eps)
        if self.ln.weight is not None:
            y = y * self.ln.weight
        if self.ln.bias is not None:
            y = y + self.ln.bias
        return y.movedim(-1, self.dim)


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
    with tolerant_reshape_mapping():
        return dg.get_pruning_group(root, handler, idxs)


def compact(
    model: nn.Module, plan: PruningPlan, example: torch.Tensor, graph: ModelGraph | None = None, *, _cuts=None,
    _share: bool = False,
) -> nn.Module:
    """Return a new, smaller dense model (``model`` is not changed).

    (``_share``: a throw-away copy that may keep sharing the original's uncut tensors; the probe's.)
    """
    graph = graph or analyze_graph(model, example)  # compaction itself is the probe
    plan.validate(graph)
    removed = plan.removed(graph)
    new = _structure_copy(model)  # the cuts below make new tensors: cloning them all first would be wasted
    if removed and graph.rewrites:  # x.view(-1, 576) -> torch.flatten(x, 1) before any width changes
        new = apply_rewrites(new, graph.rewrites)
    if removed:
        cuts = _cuts if _cuts is not None else plan_cuts(graph, removed)
        for name, remap in graph.remaps.items():  # Torch-Pruning cuts flatten -> Linear channel-first
            _unshare(new.get_submodule(name), model)  # reordered in place
            to_channel_first(new.get_submodule(name), remap)
        if cuts is None:  # no dependency graph of the analysed model to read the cuts from: trace this copy
            _prune_traced(graph, new, example, removed)
        else:
            _apply_cuts(new, cuts)
        for name, remap in graph.remaps.items():
            lin = new.get_submodule(name)
            from_channel_first(lin, remap, lin.in_features // (lin.in_features and _spatial(remap)))
    for b in _drop_order(graph, plan.dropped):
        _set_module(new, b, _without_branch(new.get_submodule(b), graph.branches[b]))
    if not _share:
        _unshare(new, model)
    return new


def _structure_copy(model: nn.Module) -> nn.Module:
    """A deep copy of the modules that still shares every parameter and buffer tensor with ``model``."""
    memo = {id(t): t for t in model.parameters()}
    memo.update((id(t), t) for t in model.buffers())
    return copy.deepcopy(model, memo).eval()


def _unshare(copied: nn.Module, original: nn.Module | set) -> None:
    """Give every tensor of ``copied`` still shared with ``original`` (a :func:`_structure_copy`; or the set of
    ``id`` of its tensors, :func:`_tensor_ids`) its own copy."""
    shared = original if isinstance(original, set) else _tensor_ids(original)
    clones: dict[int, torch.Tensor] = {}  # tied tensors stay tied
    for mod in copied.modules():
        for store in (mod._parameters, mod._buffers):
            for k, t in store.items():
                if t is not None and id(t) in shared:
                    if id(t) not in clones:
                        clones[id(t)] = copy.deepcopy(t)
                    store[k] = clones[id(t)]


def _tensor_ids(model: nn.Module) -> set[int]:
    return {id(t) for t in model.parameters()} | {id(t) for t in model.buffers()}


@dataclass
class Cut:
    """Remove ``idxs`` (original coordinates) of the module or parameter ``name`` with one Torch-Pruning handler."""

    name: str
    param: bool  # a bare nn.Parameter (the handler returns its replacement)
    handler: object
    pruning_dim: int | None
    out: bool  # the handler cuts output channels
    idxs: set = field(default_factory=set)


def plan_cuts(graph: ModelGraph, removed: dict[str, list[int]]) -> list[Cut] | None:
    """Every layer / parameter cut of a plan, read off the analysed model's Torch-Pruning graph, or None without one.

    Each group's items are taken in the original model's coordinates (as :func:`masked` zeroes them) and the
    indices of a layer cut by several groups (the consumer of a concat) are merged, so every layer is cut once:
    no second trace of the model, and compaction and reference read the very same items.
    """
    dg = graph._tp_graph
    if dg is None or not graph._modules:
        return None
    names = {m: n for n, m in graph._modules.items()}
    pnames = getattr(dg, "_param_to_name", {})
    cuts: dict[tuple, Cut] = {}
    with tolerant_reshape_mapping():
        groups = [dg.get_pruning_group(graph._modules[g], dg.get_pruner_of_module(graph._modules[g]).prune_out_channels, idxs)
                  for g, idxs in removed.items()]
    for group in groups:
        for item in group:
            dep, mod = item.dep, item.dep.target.module
            if isinstance(mod, nn.Parameter):
                name, param = pnames.get(mod), True
            elif isinstance(mod, nn.Module):
                name, param = names.get(mod), False
            else:
                continue
            if name is None:  # Torch-Pruning's own op nodes (concat, split, reshape): nothing to cut
                continue
            key = (name, dep.handler)
            cut = cuts.get(key)
            if cut is None:
                cut = cuts[key] = Cut(name, param, dep.handler, dep.target.pruning_dim, dg.is_out_channel_pruning_fn(dep.handler))
            cut.idxs.update(int(i) for i in item.idxs)
    return list(cuts.values())


def _apply_cuts(model: nn.Module, cuts: list[Cut]) -> None:
    for cut in cuts:
        idxs = sorted(cut.idxs)
        try:
            cut.handler.__self__.pruning_dim = cut.pruning_dim  # what Torch-Pruning's Dependency.__call__ does
            if cut.param:
                parent, _, leaf = cut.name.rpartition(".")
                owner = model.get_submodule(parent) if parent else model
                setattr(owner, leaf, cut.handler(getattr(owner, leaf), idxs))
            else:
                cut.handler(model.get_submodule(cut.name), idxs)
        except Exception as e:  # torch-pruning raises bare errors for patterns it cannot cut
            raise UnsupportedModelError(f"cannot remove channels of {cut.name}: {type(e).__name__}: {e}") from None


def _prune_traced(graph: ModelGraph, new: nn.Module, example: torch.Tensor, removed: dict) -> None:
    """Trace ``new`` with Torch-Pruning and cut group by group (for a graph without its dependency graph)."""
    with one_thread():
        dg = build_tp_graph(new, example)
    for g, idxs in removed.items():
        try:
            _tp_group(graph, new, dg, g, idxs).prune()
        except Exception as e:  # torch-pruning raises bare errors for patterns it cannot cut
            raise UnsupportedModelError(f"cannot remove channels of group {g}: {type(e).__name__}: {e}") from None


def _spatial(remap) -> int:
    n = 1
    for s in remap.shape[2:]:
        n *= int(s)
    return n


def _drop_order(graph: ModelGraph, dropped) -> list[str]:
    """Dropped blocks to replace, innermost first; blocks inside another dropped branch leave with it."""
    return sorted(graph.outermost(dropped), key=lambda b: -b.count("."))


def _without_branch(block: nn.Module, branch) -> nn.Module:
    """What ``block`` becomes without its branch: ``act(x)`` (Residual) or its traced graph with ``x + f(x)`` -> ``x``."""
    if isinstance(block, Residual):
        return DroppedBranch(block.act)
    found = find_branch(block)
    if found is None or not branch.output.endswith("." + found.output):
        raise UnsupportedModelError(f"residual block {branch.name} ({type(block).__name__}) no longer traces to "
                                    "x + f(x); it cannot be dropped (remove it from the plan's dropped list)")
    return dropped_block(block, found)


def masked(
    model: nn.Module, plan: PruningPlan, example: torch.Tensor, graph: ModelGraph | None = None, *, _cuts=None,
    _share: bool = False,
) -> nn.Module:
    """The original model computing what the plan keeps: removed channels zeroed where consumed.

    (``_share``: a throw-away reference that keeps sharing the original's unchanged tensors; the verification's.)
    """
    graph = graph or analyze_graph(model, example)
    plan.validate(graph)
    removed = plan.removed(graph)
    ref = _structure_copy(model)
    if removed:
        cuts = _cuts if _cuts is not None else plan_cuts(graph, removed)
        if cuts is None:
            with one_thread():
                graph = analyze_graph(ref, example)  # the copy's own dependency graph
            cuts = plan_cuts(graph, removed)
        norms: dict[str, set] = {}  # LayerNorms over removed channels: their statistics exclude them
        shared = _tensor_ids(model)
        with torch.no_grad():
            for cut in cuts:
                if cut.param:
                    continue
                mod = ref.get_submodule(cut.name)
                if isinstance(mod, nn.LayerNorm) and cut.out:
                    norms.setdefault(cut.name, set()).update(cut.idxs)
                if cut.out or not isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)):
                    continue
                if _is_depthwise(mod):
                    continue  # in == out are coupled: its consumer is zeroed instead
                if _is_grouped(mod):  # analyze freezes every group that touches one
                    raise VerificationError(f"a group reaches grouped convolution {cut.name}, whose widths must stay "
                                            "(a surgery bug: please report it with the model)")
                ix = torch.as_tensor(sorted(cut.idxs), dtype=torch.long)
                _unshare(mod, shared)  # zeroed in place
                if cut.name in graph.remaps:  # channel-first index -> the column after the channels-last flatten
                    ix = column_of(graph.remaps[cut.name], ix)
                if isinstance(mod, nn.modules.conv._ConvTransposeNd):
                    mod.weight[ix] = 0  # (in, out, k...)
                else:
                    mod.weight[:, ix] = 0  # (out, in, k...)
        for name, rm in norms.items():
            ln = ref.get_submodule(name)
            kept = torch.as_tensor([i for i in range(ln.normalized_shape[-1]) if i not in rm], dtype=torch.long)
            _set_module(ref, name, KeptStatsLayerNorm(ln, kept, layer_norm_dim(ln)))
    for b in graph.outermost(plan.dropped):
        block = ref.get_submodule(b)
        if isinstance(block, Residual):
            block.branch = ZeroBranch()
        else:
            ref.get_submodule(graph.branches[b].output).register_forward_hook(_answer_zeros)
    if not _share:
        _unshare(ref, model)
    return ref


def _answer_zeros(mod, inputs, output):
    """Forward hook: the module's output replaced by zeros (a dropped branch contributes nothing)."""
    return torch.zeros_like(output)


def outputs_of(out) -> list[torch.Tensor]:
    """A model's outputs as a flat list of tensors (a tensor, or tuples / lists / dicts of them)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in outputs_of(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in outputs_of(v)]
    return []


def _shapes(out) -> list[tuple]:
    return [tuple(t.shape) for t in outputs_of(out)]


def verify(reference: nn.Module, candidate: nn.Module, inputs: torch.Tensor, rel_tol: float = REL_TOL) -> dict:
    """Compare two models on real inputs, output by output; raise :class:`VerificationError` past ``rel_tol``.

    Several outputs (a tuple, list or dict of tensors) are compared one by one; the relative
    difference of each is its largest absolute difference over its largest magnitude, and the
    worst output is reported.
    """
    reference.eval()
    candidate.eval()
    with torch.no_grad():
        a = reference(inputs)
        b = run_named(candidate, inputs)
        if _shapes(a) != _shapes(b):
            raise UnsupportedModelError(f"compact model output shapes {_shapes(b)} != masked model {_shapes(a)}: "
                                        + _shape_culprit(run_traced(candidate, inputs)[1], candidate))
    rels, max_abs = [], 0.0
    for u, v in zip(outputs_of(a), outputs_of(b)):
        d = float((u - v).abs().max()) if u.numel() else 0.0
        max_abs = max(max_abs, d)
        rels.append(d / (float(u.abs().max()) or 1.0) if u.numel() else 0.0)
    rel = max(rels) if rels else 0.0
    result = {"max_abs_diff": max_abs, "rel_diff": rel, "rel_tol": rel_tol, "n_inputs": int(inputs.shape[0]),
              "n_outputs": len(rels)}
    if not rel <= rel_tol:
        which = f" (output {rels.index(rel)} of {len(rels)})" if len(rels) > 1 else ""
        raise VerificationError(
            f"compact model differs from the masked model{which}: relative difference {rel:.2e} > {rel_tol:.0e} "
            "(a surgery bug: please report it with the model and plan)"
        )
    return result


HARD_CODED = "a shape hard-coded in forward() is the usual cause: derive it from the tensor (x.flatten(1), x.view(x.size(0), -1))"


def _shape_culprit(change, model: nn.Module) -> str:
    if change is None:
        return "no op changed the batch size; " + HARD_CODED
    op, module, ins, outs = change
    return (f"op {op} in {OpRecorder(model).where(module)} turns a batch of {ins[0]} into {outs[0]} "
            f"(input {tuple(ins)} -> {tuple(outs)}); " + HARD_CODED)


def run_named(model: nn.Module, inputs: torch.Tensor):
    """``model(inputs)``; if it fails, :func:`run_traced` runs it again to name the op and the module (no recording
    overhead on the run that works)."""
    try:
        return model(inputs)
    except (RuntimeError, ValueError, IndexError):
        return run_traced(model, inputs)[0]  # raises UnsupportedModelError naming the op


def run_traced(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, tuple | None]:
    """Run ``model``; if it fails, name the op and the module where it failed and the likely cause.

    Returns the output and the first op that changed the batch size (op, module, input shape,
    output shape), or None.
    """
    rec = OpRecorder(model)
    rec.watch_batch = int(inputs.shape[0])
    try:
        with rec.recording(ops=False):
            out = model(inputs)
    except (RuntimeError, ValueError, IndexError) as e:
        op, where = rec.failed_op or ("", rec.stack[-1] if rec.stack else "")
        at = f"at op {op} in {rec.where(where)}" if op else f"in {rec.where(where)}"
        at += f" ({rec.failed_line})" if rec.failed_line else ""
        raise UnsupportedModelError(f"the compact model fails {at}: {str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                                    + HARD_CODED) from None
    return out, rec.batch_change


def probe(model: nn.Module, graph: ModelGraph, example: torch.Tensor) -> None:
    """Compact a copy one channel narrower per group and run it on a batch of two.

    A shape hard-coded in ``forward()`` (``x.view(-1, 512)``, ``x.view(b, 8, -1)``) breaks here,
    before any training, and is reported naming the op and its module (one extra compaction).
    Only shapes matter, so the copy holds ``meta`` tensors (no data: the cut and the run cost no
    arithmetic); a model whose forward cannot run on ``meta`` (it reads values: ``.item()``,
    ``if x.sum() > 0``) is probed on real tensors instead.
    """
    keep = _probe_keep(graph)
    if not keep:
        return
    plan = PruningPlan(keep=keep)
    x = torch.cat([example, example])
    meta = copy.deepcopy(model, _meta_memo(model)).eval()
    try:
        with torch.no_grad():
            want = _batch_shapes(meta, x.to("meta"))
    except Exception:  # noqa: BLE001 - an op without a meta kernel, or a value read: probe on real tensors
        meta = None
    if meta is not None:
        small, x = compact(meta, plan, example.to("meta"), graph, _share=True), want[0]
        want = want[1]
    else:
        small = compact(model, plan, example, graph, _share=True)  # only run, then dropped
        with torch.no_grad():
            x, want = _batch_shapes(model, x, example)
    with torch.no_grad():
        try:
            got = run_named(small, x)
        except UnsupportedModelError as e:
            raise UnsupportedModelError("the model cannot be cut: with one channel less per group, " + str(e).replace(
                "the compact model fails", "it fails", 1)) from None
        if _shapes(got) != want:
            raise UnsupportedModelError(f"the model cannot be cut: with one channel less per group its output shapes "
                                        f"{_shapes(got)} != {want}: " + _shape_culprit(run_traced(small, x)[1], small))


def _batch_shapes(model: nn.Module, x: torch.Tensor, single: torch.Tensor | None = None) -> tuple:
    """``(input, output shapes)`` of ``model`` on the batch of two ``x``, or on ``single`` if it takes batch 1 only
    (``single`` None: on ``x[:1]``)."""
    try:
        return x, _shapes(model(x))
    except Exception:  # noqa: BLE001 - the model takes batch 1 only
        x = x[: x.shape[0] // 2] if single is None else single
        return x, _shapes(model(x))


def _meta_memo(model: nn.Module) -> dict:
    """A ``copy.deepcopy`` memo giving every parameter and buffer a ``meta`` twin of its shape (ties kept)."""
    memo: dict = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return memo


def _probe_keep(graph: ModelGraph) -> dict[str, list[int]]:
    """Per group of 2+ channels, all channels but one (one that leaves every layer owning part of the group a channel)."""
    parts: dict[str, list[list[int]]] = {}
    for _, g, roots in _owned_parts(graph):
        parts.setdefault(g, []).append(roots)
    keep = {}
    for g, grp in graph.groups.items():
        if grp.size < 2:
            continue
        for r in reversed(range(grp.size)):
            if all(len(p) > 1 for p in parts.get(g, []) if r in p):
                keep[g] = [i for i in range(grp.size) if i != r]
                break
    return keep


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def compact_and_verify(
    model: nn.Module, plan: PruningPlan, example: torch.Tensor, inputs: torch.Tensor, graph: ModelGraph | None = None
) -> tuple[nn.Module, dict]:
    """Compact, then check against the masked model and the plan's predicted parameter count."""
    with one_thread():
        return _compact_and_verify(model, plan, example, inputs, graph)


def _compact_and_verify(model, plan, example, inputs, graph):
    graph = graph or analyze_graph(model, example)  # the compaction below is the probe
    plan.validate(graph)
    cuts = plan_cuts(graph, plan.removed(graph))  # read once, used by both
    small = compact(model, plan, example, graph, _cuts=cuts)
    ref = masked(model, plan, example, graph, _cuts=cuts, _share=True)  # only run, then dropped
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
