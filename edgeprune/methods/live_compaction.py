"""Physical removal during training: cut a gated model's removed structures out while it trains.

A gated network (:class:`~edgeprune.methods.gates.GatedModel`) removes a channel by a gate of 0
at its consumers: the channel still costs its multiply-adds. :class:`LiveCompaction` makes the
removal real mid-training with the surgery the build uses (:func:`~edgeprune.surgery.compact`
with a :class:`~edgeprune.surgery.PruningPlan` in the *original* model's coordinates):

* **index encoding**: at the start, a copy of the original model has every floating parameter and
  buffer replaced by the flat index of each entry (float64, exact). Compacting that copy with the
  cumulative plan gives the compact architecture *and*, in each of its tensors, which original
  entry every compact entry came from, whatever Torch-Pruning cut (coupled layers, residual adds,
  a flatten -> linear remap). Carrying values over is then one gather per tensor: the weights,
  the batch-norm statistics and the optimizer state (SGD momentum) of the kept entries;
* **gates stay in original coordinates**: the gate vectors (π, their optimizer state, the
  removal counters, the closed-form expected cost) keep their full length; only the consumer ->
  gate map (``ChannelMasks.src``) is re-pointed at the compact consumers' input columns, so the
  random stream, the cost and the end-of-training plan are unchanged by a compaction;
* **the same computation**: after cutting, one forward of a few real inputs through the compact
  model is compared with the masked model (the gated forward before the cut, removed gates 0);
  a difference above ``rel_tol`` undoes the cut and switches compaction off for the run (e.g. a
  LayerNorm over a group, whose compact statistics differ from the masked ones);
* :meth:`LiveCompaction.restore` scatters the trained compact weights back into the original
  model (zeros where structures were removed), so the method returns the model its plan applies to.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from ..errors import EdgepruneError
from ..surgery import PruningPlan, compact
from ..surgery.masking import BranchScales


def _float_tensors(model: nn.Module):
    yield from model.named_parameters()
    yield from ((n, b) for n, b in model.named_buffers() if b.is_floating_point())


def index_encoded(model: nn.Module) -> tuple[nn.Module, dict[str, torch.Size]]:
    """A float64 copy of ``model`` whose every floating parameter/buffer holds its own flat indices."""
    enc = copy.deepcopy(model).double()
    shapes = {}
    with torch.no_grad():
        for name, t in _float_tensors(enc):
            shapes[name] = t.shape
            t.copy_(torch.arange(t.numel(), dtype=torch.float64).view(t.shape))
    return enc, shapes


class LiveCompaction:
    """Replaces ``net.model`` (a :class:`GatedModel` with ``alive`` / ``alive_b`` masks of removed structures) by
    its compacted version whenever :meth:`step` finds new removals; :meth:`restore` at the end of training."""

    def __init__(self, net, graph, example: torch.Tensor, *, rel_tol: float = 1e-5):
        self.net, self.graph, self.rel_tol = net, graph, rel_tol
        self.original = net.model  # the model the final plan applies to
        self.orig_masks = net.masks
        self.encoded, self.shapes = index_encoded(_without_hooks(net.model))
        self.example = example.detach().double() if example.is_floating_point() else example.detach()
        self.index: dict[str, torch.Tensor] | None = None  # tensor name -> original flat indices (None: not cut)
        self.enabled = True
        self.events: list[dict] = []
        self.plan = PruningPlan()

    # ------------------------------------------------------------------ plan
    def cumulative_plan(self) -> PruningPlan:
        """Every structure removed so far, as a plan on the original model."""
        net, keep = self.net, {}
        for g, a in self.orig_masks.split(net.alive).items():
            if not bool(a.all()):
                keep[g] = a.nonzero().flatten().tolist()
        dropped = [b for b, a in zip(net.branch_names, net.alive_b.tolist()) if not a]
        return PruningPlan(keep, dropped, 1, "live-compaction")

    def pending(self) -> bool:
        p = self.cumulative_plan()
        return self.enabled and (p.keep != self.plan.keep or p.dropped != self.plan.dropped)

    # ------------------------------------------------------------------ cut
    def step(self, optimizer: torch.optim.Optimizer | None, inputs: torch.Tensor, step: int, log=None) -> dict | None:
        """Cut everything removed since the last call; returns the event record (None: nothing to do)."""
        if not self.pending():
            return None
        t0 = time.perf_counter()
        net, plan = self.net, self.cumulative_plan()
        z, zb = net.alive.float(), net.alive_b.float()
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                want = net.run(inputs, z, zb)
            try:
                small = compact(self.encoded, plan, self.example, self.graph)
            except EdgepruneError as e:  # a plan the surgery refuses (e.g. a layer left without channels)
                self._disable(f"the surgery refused the plan: {e}", log)
                return None
            old_model, old_masks, old_index = net.model, net.masks, self.index
            new_index = self._adopt(small)
            net.model, net.masks = small, self._masks(small, new_index)
            self._rehook(plan.dropped)
            with torch.no_grad():
                got = net.run(inputs, z, zb)
            rel = float((got - want).abs().max()) / (float(want.abs().max()) or 1.0)
            if not rel <= self.rel_tol:  # the compact model computes something else than the masked one: undo
                net.model, net.masks = old_model, old_masks
                self._rehook(self.plan.dropped)
                self._disable(f"the compact model differs from the masked one (relative {rel:.1e})", log)
                return None
            if optimizer is not None:
                self._move_state(optimizer, old_model, small, new_index)
            self.index, self.plan = new_index, plan
        finally:
            net.train(was_training)
        cost = self.graph.cost_of_sets({g: set(v) for g, v in plan.keep.items()}, plan.dropped)
        ev = {"step": step, "seconds": time.perf_counter() - t0, "rel_diff": rel, "macs": cost["macs"],
              "params": cost["params"], "dropped_branches": list(plan.dropped)}
        self.events.append(ev)
        return ev

    def _adopt(self, small: nn.Module) -> dict[str, torch.Tensor]:
        """Turn the compacted index-encoded copy into the training model: its original indices, then the
        current values of those entries (weights, batch-norm statistics)."""
        new_index = {name: t.detach().round().long() for name, t in _float_tensors(small)}
        small.float()
        cur = self.net.model
        old = dict(_float_tensors(cur))
        old_other = {n: b for n, b in cur.named_buffers() if not b.is_floating_point()}
        with torch.no_grad():
            for name, t in _float_tensors(small):
                t.copy_(self._gather(old[name], name, new_index[name]))
            for name, b in small.named_buffers():
                if not b.is_floating_point() and name in old_other:
                    b.copy_(old_other[name])
        small.train(cur.training)
        return new_index

    def _move_state(self, optimizer, old_model: nn.Module, small: nn.Module, new_index) -> None:
        """Point the optimizer at the compact parameters and carry the state (momentum) of the kept entries."""
        new_params = dict(small.named_parameters())
        replace = {p: name for name, p in old_model.named_parameters()}
        for group in optimizer.param_groups:
            kept = []
            for p in group["params"]:
                if p not in replace:
                    kept.append(p)
                    continue
                name = replace[p]
                st = optimizer.state.pop(p, None)
                if name not in new_params:
                    continue  # the parameter left with a removed branch
                q = new_params[name]
                if st:
                    optimizer.state[q] = {k: (self._gather(v, name, new_index[name])
                                              if torch.is_tensor(v) and v.shape == p.shape else v) for k, v in st.items()}
                kept.append(q)
            group["params"] = kept

    def _gather(self, cur: torch.Tensor, name: str, idx: torch.Tensor) -> torch.Tensor:
        """The entries of original flat indices ``idx`` from ``cur`` (a tensor of the current model)."""
        full = self._full(cur, name)
        return full.reshape(-1)[idx.reshape(-1)].view(idx.shape)

    def _full(self, cur: torch.Tensor, name: str) -> torch.Tensor:
        """``cur`` scattered into the original shape (zeros where entries were removed)."""
        cur = cur.detach()
        if self.index is None:
            return cur
        full = cur.new_zeros(self.shapes[name])
        full.reshape(-1)[self.index[name].reshape(-1)] = cur.reshape(-1)
        return full

    def _masks(self, small: nn.Module, index: dict[str, torch.Tensor]):
        """The original ChannelMasks re-pointed at ``small``'s consumers: gate positions stay the original ones."""
        masks = copy.copy(self.orig_masks)
        modules = dict(small.named_modules())
        src, kinds = {}, {}
        for name, s in self.orig_masks.src.items():
            if name not in modules:
                continue  # the consumer left with a removed branch
            idx = index[f"{name}.weight"]
            shape = self.shapes[f"{name}.weight"]
            dim = 0 if self.orig_masks.kinds[name] == "convT" else 1
            first = idx.select(1 - dim, 0) if idx.dim() > 1 else idx
            while first.dim() > 1:
                first = first.select(1, 0)
            stride = 1
            for d in shape[dim + 1:]:
                stride *= int(d)
            orig_cols = (first // stride) % int(shape[dim])
            src[name] = s[orig_cols]
            kinds[name] = self.orig_masks.kinds[name]
        masks.src, masks.kinds = src, kinds
        return masks

    def _rehook(self, dropped) -> None:
        """Branch-scale hooks onto the current model, for the branches it still has (``dropped``: cut out of it)."""
        net = self.net
        net.scales.remove()
        modules = dict(net.model.named_modules())
        names = [b for b in net.branch_names if b in modules and b not in dropped]
        net.scales = BranchScales(net.model, names)

    def _disable(self, why: str, log) -> None:
        self.enabled = False
        self.events.append({"disabled": why})
        if log:
            log(f"  live compaction off for the rest of training: {why}; removed structures stay masked")

    # ------------------------------------------------------------------ end
    @torch.no_grad()
    def restore(self) -> nn.Module:
        """Write the trained compact weights back into the original model (removed entries 0) and wrap it again."""
        net = self.net
        if self.index is None:
            return net.model
        cur = dict(_float_tensors(net.model))
        other = {n: b for n, b in net.model.named_buffers() if not b.is_floating_point()}
        for name, t in _float_tensors(self.original):
            t.copy_(self._full(cur[name], name) if name in cur else torch.zeros_like(t))
        for name, b in self.original.named_buffers():
            if not b.is_floating_point() and name in other:
                b.copy_(other[name])
        net.model, net.masks, self.index = self.original, self.orig_masks, None
        self.original.train(net.training)
        self._rehook([])
        return self.original


def _without_hooks(model: nn.Module) -> nn.Module:
    """``model`` as a plain copy: no forward hooks and no patched ``forward`` (branch scales, skipped branches)."""
    m = copy.deepcopy(model)
    for mod in m.modules():
        mod._forward_hooks.clear()
        mod.__dict__.pop("forward", None)
    return m
