"""Which ops the channels of a pruned group may pass through, and the refusal of the others.

Torch-Pruning treats every op it does not know as element-wise: a channel flip, a channel
shuffle or a slice ``x[:, :4]`` would be cut as if channel ``i`` stayed channel ``i``, and the
compact model would silently compute something else. :func:`check_group_ops` instead accepts
only ops whose effect on channel ``i`` is known (element-wise maths, activations, pooling,
reductions over other dimensions, flatten, reshapes that keep the batch and the channel
dimension or merge the channel dimension as the outermost one, channel concat, indexing
that leaves the channel dimension whole) and refuses a group that passes through anything
else with a one-line error naming the op, the module whose forward runs it and the layer
whose channels pass through it.

Hard-coded shapes (``x.view(-1, 512)``) look like a flatten to any trace; they are found by
the probe compaction in :func:`edgeprune.surgery.compact.probe`, which runs a slightly
narrower model once and names the op that breaks.
"""

from __future__ import annotations

import math

from torch import nn

from ..errors import UnsupportedModelError
from .trace import OpInfo, OpRecorder

ELEMENTWISE = {
    # activations
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "sigmoid", "sigmoid_", "tanh", "tanh_", "silu", "silu_",
    "gelu", "hardswish", "hardswish_", "hardsigmoid", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu",
    "softplus", "mish", "threshold", "threshold_", "clamp", "clamp_", "clip", "clamp_min", "clamp_max", "logsigmoid",
    # arithmetic (a per-channel operand without gradient is caught by the probe compaction's shape check)
    "add", "add_", "__add__", "__iadd__", "__radd__", "sub", "sub_", "__sub__", "__isub__", "__rsub__", "rsub",
    "mul", "mul_", "__mul__", "__imul__", "__rmul__", "div", "div_", "__truediv__", "__itruediv__", "__rtruediv__",
    "neg", "__neg__", "abs", "exp", "log", "sqrt", "rsqrt", "pow", "__pow__", "square", "reciprocal", "sin", "cos",
    "erf", "maximum", "minimum",
    # layout-neutral
    "clone", "contiguous", "to", "float", "type_as", "dropout", "dropout2d", "feature_dropout", "alpha_dropout",
    "squeeze", "squeeze_", "unsqueeze", "unsqueeze_",
    # pooling and resizing over spatial dimensions
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "adaptive_max_pool3d", "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d_with_indices",
    "adaptive_max_pool3d_with_indices", "lp_pool1d", "lp_pool2d", "interpolate", "upsample", "upsample_nearest",
    "upsample_bilinear",
}
REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp", "prod"}
RESHAPES = {"view", "reshape", "view_as", "reshape_as"}
# layers whose own ops (seen or not) Torch-Pruning cuts as a whole
LAYER_INTERNAL = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.PReLU, nn.LayerNorm)


def check_group_ops(group_name: str, items, rec: OpRecorder, modules: dict) -> str | None:
    """Raise :class:`UnsupportedModelError` if a Torch-Pruning group passes through an op we cannot cut through;
    return why the group must stay whole if it passes a channel split or shuffle (ShuffleNet), else None.

    ``items`` are the group's internal-op nodes (Torch-Pruning ``Node`` objects whose module is
    none of the model's modules).
    """
    refused = None
    for node in items:
        fn = node.grad_fn
        if fn is None:
            continue
        info = rec.info.get(fn)
        if info is None:
            raise UnsupportedModelError(
                f"unsupported op: {getattr(fn, 'name', lambda: type(fn).__name__)()} on the channels of layer "
                f"{group_name} was not seen in the trace; replace it with standard torch ops, or keep the layer "
                f"unpruned (edgeprune.surgery.analyze(..., ignored_layers=[{group_name!r}]))"
            )
        why = _refusal(info, modules)
        if why and relayouts(info, modules):  # the group stays whole: whatever else it passes is never cut
            kind = "a channel split or shuffle" if splits_channels(info) else "a layout change"
            return f"its channels pass through {_describe(info)} in {rec.where(info.module)}, which {why} ({kind})"
        if why and refused is None:
            refused = (info, why)
    if refused:
        info, why = refused
        raise UnsupportedModelError(
            f"unsupported op: {_describe(info)} in {rec.where(info.module)} {why}, and the channels of layer "
            f"{group_name} pass through it, so they cannot be removed exactly; {_fix(info)}, or keep the layer "
            f"unpruned (edgeprune.surgery.analyze(..., ignored_layers=[{group_name!r}]))"
        )


LAYOUT_OPS = {"view", "reshape", "view_as", "reshape_as", "flatten", "transpose", "swapaxes", "permute", "movedim",
              "t", "chunk", "split", "split_with_sizes", "tensor_split", "unbind", "__getitem__"}
# autograd nodes of an in-place op on a view (GhostNet's ``x = out[:, :16]; x += shortcut``): not seen as a call
IN_PLACE_VIEW = {"asstrided", "torch::autograd::copyslices"}


def relayouts(info: OpInfo, modules: dict) -> bool:
    """A reshape / transpose / split that does not keep channel ``i`` as channel ``i`` (a channel shuffle, a split
    into attention heads, tokens moved to the channel dimension): the groups through it are kept whole, not refused
    -- keeping them whole is what ``ignored_layers`` would do, and nothing is cut through such an op."""
    return ((info.seen and info.op in LAYOUT_OPS) or info.op in IN_PLACE_VIEW) and bool(_refusal(info, modules))


def splits_channels(info: OpInfo) -> bool:
    """A channel split (chunk / split along the channels) or a reshape that regroups them (a channel shuffle)."""
    if info.op in ("chunk", "split", "split_with_sizes", "tensor_split", "unbind"):
        dim = info.args[1] if len(info.args) > 1 else info.kwargs.get("dim", 0)
        nd = len(info.in_shape or ())
        return bool(nd) and isinstance(dim, int) and dim % nd == 1
    return info.op in RESHAPES and _reshape(info.in_shape, info.out_shape) == "splits or regroups the channel dimension"


def likely_cause(rec: OpRecorder, modules: dict) -> str:
    """The first recorded op after a prunable layer that does not keep channels, named for an error message."""
    for fn, info in rec.info.items():
        if not info.seen or not _refusal(info, modules) or not _after_a_layer(fn, rec):
            continue
        return f"likely cause: op {_describe(info)} in {rec.where(info.module)} {_refusal(info, modules)}"
    return "the model uses an op between its layers that Torch-Pruning does not handle"


def _after_a_layer(fn, rec: OpRecorder, limit: int = 10_000) -> bool:
    """Whether a prunable layer's output is among the inputs of autograd node ``fn``."""
    seen, stack = set(), [f for f, _ in fn.next_functions if f is not None]
    while stack and len(seen) < limit:
        f = stack.pop()
        if f in seen:
            continue
        if f in rec.layer_out:
            return True
        seen.add(f)
        stack.extend(g for g, _ in f.next_functions if g is not None)
    return False


def merges_channels(info: OpInfo) -> bool:
    """A flatten/reshape that merges the channel dimension with others (``(N, C, H, W) -> (N, C*H*W)``)."""
    if info.op not in RESHAPES and info.op != "flatten":
        return False
    ins, outs = info.in_shape or (), info.out_shape or ()
    return len(ins) >= 2 and len(outs) >= 2 and ins[1] != outs[1]


def _fix(info: OpInfo) -> str:
    if info.op in RESHAPES or info.op == "flatten":
        return "reshape only to keep the channel dimension or to flatten it (x.flatten(1))"
    if info.op in ("__getitem__", "__setitem__"):
        return "index whole channels only (x[:, :, ...])"
    return "apply it before the first prunable layer or after the last one"


def _describe(info: OpInfo) -> str:
    args = ", ".join([repr(a) for a in info.args] + [f"{k}={v!r}" for k, v in info.kwargs.items()])
    return f"{info.op}({args})" if info.seen else info.op


def _refusal(info: OpInfo, modules: dict) -> str:
    """Why channel ``i`` does not stay channel ``i`` through this op ('' if it does)."""
    op = info.op
    owner = modules.get(info.module)
    if isinstance(owner, LAYER_INTERNAL):
        return ""  # the layer's own ops (conv2d, batch_norm, the weight transpose inside F.linear)
    if op in IN_PLACE_VIEW:
        return "writes in place into a view (Torch-Pruning maps no index through it)"
    if not info.seen:
        if op in ELEMENTWISE or (info.parent and info.parent in ELEMENTWISE):
            return ""  # an element-wise node, or a step inside an accepted function (e.g. interpolate)
        return f"(made inside {info.parent}) is not an op edgeprune knows" if info.parent else \
            "is not an op edgeprune knows how to cut channels through"
    if op in ELEMENTWISE:
        return ""
    if op == "pad":
        pad = info.args[0] if info.args else info.kwargs.get("pad", ())
        nd = len(info.in_shape or ())
        return "pads the channel dimension" if len(pad) > 2 * max(nd - 2, 0) else ""
    if op in REDUCTIONS:
        return _reduction(info)
    if op == "flatten":
        start = info.args[0] if info.args else info.kwargs.get("start_dim", 0)
        nd = len(info.in_shape or ())
        return "merges the batch and channel dimensions" if nd and start % nd == 0 else ""
    if op in RESHAPES:
        return _reshape(info.in_shape, info.out_shape)
    if op in ("__getitem__", "__setitem__"):
        return _indexing(info)
    if op == "cat":
        dim = info.args[0] if info.args else info.kwargs.get("dim", 0)
        nd = len(info.out_shape or ())
        return "" if nd and dim % nd == 1 else "concatenates along a dimension other than the channels"
    if op in ("expand", "expand_as"):
        return "" if info.in_shape and info.out_shape and info.in_shape[1:2] == info.out_shape[1:2] else \
            "expands the channel dimension"
    if op in ("transpose", "swapaxes", "permute", "movedim", "t") and _channels_last_round_trip(info):
        return ""
    if op in ("transpose", "swapaxes", "permute", "movedim", "t"):
        return "" if info.in_shape and info.out_shape and info.in_shape[:2] == info.out_shape[:2] and _keeps_01(info) \
            else "moves the channel dimension"
    return "is not an op edgeprune knows how to cut channels through"


def _reduction(info: OpInfo) -> str:
    dims = info.args[0] if info.args else info.kwargs.get("dim")
    if dims is None:
        return "reduces over all dimensions, channels included"
    nd = len(info.in_shape or ())
    dims = dims if isinstance(dims, (list, tuple)) else (dims,)
    if not nd or any(not isinstance(d, int) for d in dims):
        return "reduces over dimensions edgeprune cannot read"
    return "reduces over the channel dimension" if any(d % nd == 1 for d in dims) else ""


def _reshape(ins, outs) -> str:
    """Accept reshapes that keep the batch and either keep the channel dim or merge it (outermost) with the next ones,
    and a per-channel vector shaped to broadcast over the channels (``gamma.reshape(1, -1, 1, 1)``)."""
    if ins and outs and len(ins) == 1 and len(outs) >= 2 and outs[1] == ins[0] and \
            all(d == 1 for i, d in enumerate(outs) if i != 1):
        return ""
    if not ins or not outs or len(ins) < 2 or len(outs) < 2 or ins[0] != outs[0]:
        return "reshapes the batch dimension"
    if outs[1] == ins[1]:
        return ""
    for k in range(2, len(ins) + 1):
        if math.prod(ins[1:k]) == outs[1]:
            return ""
    return "splits or regroups the channel dimension"


def _indexing(info: OpInfo) -> str:
    key = info.args[0] if info.args else ()
    key = key if isinstance(key, tuple) else (key,)
    nd = len(info.in_shape or ())
    full = slice(None, None, None)
    if any(k is None for k in key):
        return "inserts a dimension before the channels"
    if Ellipsis in key:
        i = key.index(Ellipsis)
        before, after = key[:i], key[i + 1:]
        if len(before) >= 2:
            ok = before[0] == full and before[1] == full
        elif len(before) == 1:
            ok = before[0] == full and len(after) <= nd - 2
        else:
            ok = len(after) <= nd - 2
    else:
        ok = (len(key) < 1 or key[0] == full) and (len(key) < 2 or key[1] == full)
    return "" if ok else "indexes the channel dimension"



def _channels_last_round_trip(info: OpInfo) -> bool:
    """permute(0, 2, .., n-1, 1) (channels to the last dimension) or its inverse (ConvNeXt's channels-last blocks):
    the ops in between see the channels last (Linear and LayerNorm over the last dimension); the compaction is
    verified against the masked model, which catches an op that mixes channels there."""
    if info.op != "permute" or not info.in_shape:
        return False
    dims = info.args[0] if len(info.args) == 1 and isinstance(info.args[0], (list, tuple)) else info.args
    n = len(info.in_shape)
    dims = [int(d) % n for d in dims]
    return n >= 3 and dims in ([0, *range(2, n), 1], [0, n - 1, *range(1, n - 1)])


def _keeps_01(info: OpInfo) -> bool:
    """transpose/permute: dims 0 and 1 stay where they are."""
    if info.op == "permute":
        dims = info.args[0] if len(info.args) == 1 and isinstance(info.args[0], (list, tuple)) else info.args
        return list(dims[:2]) == [0, 1]
    if info.op in ("transpose", "swapaxes", "movedim"):
        nd = len(info.in_shape or ())
        a, b = (info.args + (None, None))[:2]
        if not isinstance(a, int) or not isinstance(b, int) or not nd:
            return False
        return a % nd >= 2 and b % nd >= 2
    return False


# ops through which a bare per-channel parameter (a layer scale, an embedding) may act on a group
PARAM_OPS = {"add", "add_", "__add__", "__radd__", "__iadd__", "mul", "mul_", "__mul__", "__rmul__", "__imul__",
             "sub", "__sub__", "__rsub__", "div", "__truediv__", "expand", "expand_as", "view", "reshape",
             "unsqueeze", "squeeze", "to", "type_as", "__get__"}  # __get__: attribute reads (p.shape)


def check_bare_parameter(p: nn.Parameter, root: str, dg, rec: OpRecorder) -> str:
    """Name of a parameter outside a standard layer that acts element-wise on a group, or refuse it.

    Torch-Pruning slices such a parameter along its last non-singleton dimension; that is
    exact when the parameter only scales or shifts the channels (``gamma * x``, ``x + pos``).
    """
    pname = getattr(dg, "_param_to_name", {}).get(p, f"of shape {tuple(p.shape)}")
    ops = rec.param_ops.get(id(p), set())
    dims = [d for d, s in enumerate(p.shape) if s > 1]
    odd = sorted(ops - PARAM_OPS)
    if not ops or odd or not dims:
        how = f"by {', '.join(odd)}" if odd else "in a way the trace does not show"
        raise UnsupportedModelError(
            f"unsupported op: parameter {pname} of shape {tuple(p.shape)} is applied to the channels of layer {root} "
            f"{how}; only element-wise scales and shifts are cut exactly (wrap it in a standard layer, or keep the "
            f"layer unpruned: edgeprune.surgery.analyze(..., ignored_layers=[{root!r}]))"
        )
    return pname


def raised_in_torch_pruning(e: BaseException) -> bool:
    import traceback

    return any("torch_pruning" in f.filename for f in traceback.extract_tb(e.__traceback__))


def all_groups(dg, ignored_mods, root_types: list, rec: OpRecorder, modules: dict):
    """Torch-Pruning's groups; its own failures while mapping indices (e.g. an IndexError through a window
    partition) become a one-line refusal naming the likely op."""
    it = dg.get_all_groups(ignored_layers=ignored_mods, root_module_types=root_types)
    while True:
        try:
            g = next(it)
        except StopIteration:
            return
        except (IndexError, ValueError, KeyError, RuntimeError, ZeroDivisionError, AssertionError) as e:
            err = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            raise UnsupportedModelError(f"Torch-Pruning cannot map the channel indices of the model ({err}); "
                                        + likely_cause(rec, modules)) from None
        yield g


def stop_at_relayouts(dg, rec: OpRecorder, modules: dict, accepted=frozenset()) -> None:
    """Groups end at an op that does not keep channel ``i`` as channel ``i`` by layout (``support.relayouts``: a
    channel shuffle's ``view(b, 2, c // 2, h, w)``, a split into attention heads).

    Torch-Pruning cannot map indices through some of them (a shuffle's mapping divides by zero, then an
    index runs out of range) and nothing could be cut through them exactly anyway. Such a node keeps
    the dependencies that lead *into* it, so every group on either side still reaches it and is kept
    whole (``check_group_ops``), but none leads out of it. The layout ops of an accepted channels-last
    flatten (``accepted``) are cut through (layout.py).
    """
    for node in dg.module2node.values():
        info = rec.info.get(node.grad_fn) if node.grad_fn is not None and node.grad_fn not in accepted else None
        if info is not None and relayouts(info, modules):
            node.dependencies = []
