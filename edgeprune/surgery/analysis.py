"""The public entry of the surgery: analyse a model (groups, branches, cost table) and probe that it can be cut."""

from __future__ import annotations

import torch
from torch import nn

from .compact import probe as probe_compaction
from .graph import ModelGraph, analyze_graph, one_thread, tolerant_reshape_mapping


def analyze(
    model: nn.Module, example: torch.Tensor, ignored_layers: list[str] | None = None, *, strict: bool = True,
    probe: bool = True,
) -> ModelGraph:
    """Find coupled groups, droppable branches and the cost table of ``model``.

    ``ignored_layers`` names layers whose output channels must stay (every layer whose
    output reaches a model output is always kept, and so is every group that feeds or comes
    out of a grouped, non-depthwise convolution). Unsupported patterns (custom autograd
    Functions, ops that do not keep channel ``i`` as channel ``i``, shapes hard-coded in
    ``forward``) raise :class:`UnsupportedModelError` naming the op and its module; with
    ``probe`` the check includes compacting a one-channel-narrower copy once (see
    :func:`~edgeprune.surgery.compact.probe`). The model is only read, never changed.
    """
    graph = analyze_graph(model, example, ignored_layers, strict=strict)
    if probe and graph.groups:
        was_training = model.training
        model.eval()
        try:
            with one_thread(), tolerant_reshape_mapping():
                probe_compaction(model, graph, example)
        finally:
            model.train(was_training)
    return graph
