"""Which op made which autograd node, in which module: the facts behind the surgery's refusals.

:class:`OpRecorder` runs one forward pass of a model (usually Torch-Pruning's own tracing
pass, so that its graph nodes are the very autograd nodes recorded here) and keeps, for every
autograd node reachable from the outputs, an :class:`OpInfo`: the torch function that
created it (``view``, ``flip``, ``__getitem__``, ...), its non-tensor arguments, its input and
output shapes and the innermost module whose ``forward`` ran it. It also keeps the call count
and first input/output shapes of every module and the output nodes of the prunable layers.

Ops are seen through a :class:`~torch.overrides.TorchFunctionMode`; nodes it cannot see
(the output of a custom :class:`torch.autograd.Function`, the weight transpose inside
``F.linear``) are attributed by walking the autograd graph back from each op's output and
from each module's inputs and outputs: a node not yet attributed belongs to the module that
was running when it was first reached.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode


@dataclass
class OpInfo:
    op: str  # torch function name ("view", "flip") or, for nodes no function was seen for, the node's name
    module: str  # innermost module whose forward created the node ("" = the model's own forward)
    args: tuple = ()  # the non-tensor positional arguments after the first
    kwargs: dict = field(default_factory=dict)
    in_shape: tuple | None = None  # shape of the first tensor argument
    out_shape: tuple | None = None
    seen: bool = False  # created by a torch function the mode intercepted
    parent: str = ""  # unseen nodes: the intercepted torch function whose call created them, if any
    line: str = ""  # reshapes: "file.py:LINE" of the user code that called it


@dataclass
class ModuleCall:
    calls: int = 0
    in_shape: tuple | None = None  # first call's first tensor input
    out_shape: tuple | None = None


def node_name(fn) -> str:
    """``FlipBackward0`` -> ``flip``; custom autograd Functions -> their class name."""
    if isinstance(fn, torch.autograd.function.BackwardCFunction):
        cls = getattr(fn, "_forward_cls", None)
        return getattr(cls, "__name__", "custom autograd Function")
    name = fn.name() if hasattr(fn, "name") else type(fn).__name__
    return re.sub(r"Backward\d*$", "", name).lower()


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _first_tensor(args):
    return next(_tensors(args), None)


class _TensorArg:
    """Stands in for a tensor argument in an error message: ``<tensor (24,)>``."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def __repr__(self):
        return f"<tensor {self.shape}>"


def _literal(a):
    """A printable stand-in for an argument: tensors by shape, the rest as they are."""
    if isinstance(a, torch.Tensor):
        return _TensorArg(a.shape)
    if isinstance(a, (list, tuple)):
        return type(a)(_literal(x) for x in a)
    return a


def _caller_line() -> str:
    """``file.py:LINE`` of the innermost frame outside torch and this package (the user's forward)."""
    import os
    import sys

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    f = sys._getframe(2)
    while f is not None:
        fn = f.f_code.co_filename
        if not (fn.startswith(here) or f"{os.sep}torch{os.sep}" in fn or fn.startswith("<")):
            return f"{os.path.basename(fn)}:{f.f_lineno}"
        f = f.f_back
    return ""


def func_name(func) -> str:
    name = getattr(func, "__name__", None) or str(func)
    return name


class _Mode(TorchFunctionMode):
    def __init__(self, rec: "OpRecorder"):
        super().__init__()
        self.rec = rec

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rec = self.rec
        if rec.record_ops:  # nodes made before this call (e.g. by an in-place op) are not this call's steps
            rec._claim(list(_tensors((args, kwargs))), rec.current)
        try:
            out = func(*args, **kwargs)
        except Exception:
            if rec.failed_op is None:
                rec.failed_op = (func_name(func), rec.current)
                rec.failed_line = _caller_line()
            raise
        if rec.record_ops:
            # x[key] = v returns nothing: its node is the new one of x
            rec.on_op(func, args, kwargs, args[0] if func_name(func) == "__setitem__" and args else out)
        if rec.watch_batch is not None and rec.batch_change is None:
            rec.on_batch(func, args, out)
        return out


class OpRecorder:
    """Record ops, their modules and module calls during the forward passes run inside :meth:`recording`."""

    def __init__(self, model: nn.Module, prunable: tuple = ()):
        self.model = model
        self.names = {m: n for n, m in model.named_modules()}
        self.prunable = prunable
        self.info: dict = {}  # autograd node -> OpInfo
        self.calls: dict[str, ModuleCall] = {}
        self.layer_out: dict = {}  # autograd node -> name of the prunable layer that output it
        self.layer_in: dict[str, list] = {}  # prunable layer -> autograd nodes of its first call's inputs
        self.outputs: list[torch.Tensor] = []  # the model outputs of the last recorded pass
        self.stack: list[str] = []
        self.failed_op: tuple[str, str] | None = None  # (op, module) of the first op that raised
        self.failed_line = ""  # and the user's source line that called it
        self.watch_batch: int | None = None  # batch size whose first change by an op is recorded
        self.batch_change: tuple[str, str, tuple, tuple] | None = None  # (op, module, in shape, out shape)
        self.record_ops = True
        self.param_ops: dict[int, set[str]] = {}  # id(parameter) -> the ops that took it as an argument

    @property
    def current(self) -> str:
        return self.stack[-1] if self.stack else ""

    # ------------------------------------------------------------- recording
    def _claim(self, tensors, module: str, parent: str = "") -> None:
        """Attribute every not yet attributed node behind ``tensors`` to ``module``."""
        stack = [f for t in tensors if t.grad_fn is not None for f, _ in t.grad_fn.next_functions if f is not None]
        stack += [t.grad_fn for t in tensors if t.grad_fn is not None and t.grad_fn not in self.info]
        while stack:
            fn = stack.pop()
            if fn in self.info:
                continue
            self.info[fn] = OpInfo(node_name(fn), module, parent=parent)
            stack.extend(f for f, _ in fn.next_functions if f is not None)

    def on_op(self, func, args, kwargs, out) -> None:
        for t in _tensors((args, kwargs)):
            if isinstance(t, nn.Parameter):
                self.param_ops.setdefault(id(t), set()).add(func_name(func))
        outs = [t for t in _tensors(out) if t.grad_fn is not None]
        if not outs:
            return
        first = _first_tensor(args)
        rest = args[1:] if args and next(_tensors(args[0]), None) is not None else args  # after the tensor operand(s)
        name = func_name(func)
        line = _caller_line() if name in ("view", "reshape") else ""
        for t in outs:
            if t.grad_fn not in self.info:
                self.info[t.grad_fn] = OpInfo(
                    name, self.current, tuple(_literal(a) for a in rest),
                    {k: _literal(v) for k, v in kwargs.items()},
                    tuple(first.shape) if first is not None else None, tuple(t.shape), True, line=line,
                )
        self._claim(outs, self.current, func_name(func))

    def on_batch(self, func, args, out) -> None:
        first = _first_tensor(args)
        if first is None or isinstance(first, nn.Parameter) or not first.dim() or first.shape[0] != self.watch_batch:
            return
        for t in _tensors(out):
            if t.dim() and t.shape[0] != self.watch_batch:
                self.batch_change = (func_name(func), self.current, tuple(first.shape), tuple(t.shape))
                return

    def _pre(self, name):
        def hook(mod, args, kwargs):
            self._claim(list(_tensors((args, kwargs))), self.current)
            self.stack.append(name)

        return hook

    def _post(self, name):
        def hook(mod, args, kwargs, out):
            try:
                outs = list(_tensors(out))
                self._claim(outs, name)
                c = self.calls.setdefault(name, ModuleCall())
                c.calls += 1
                if c.calls == 1:
                    first = _first_tensor((args, kwargs))
                    c.in_shape = tuple(first.shape) if first is not None else None
                    c.out_shape = tuple(outs[0].shape) if outs else None
                if isinstance(mod, self.prunable):
                    for t in outs:
                        if t.grad_fn is not None:
                            self.layer_out.setdefault(t.grad_fn, name)
                    self.layer_in.setdefault(name, [t.grad_fn for t in _tensors((args, kwargs)) if t.grad_fn is not None])
                if mod is self.model:
                    self.outputs = outs
            finally:
                if self.stack and self.stack[-1] == name:
                    self.stack.pop()

        return hook

    @contextmanager
    def recording(self, ops: bool = True):
        """Hooks on every module (and, with ``ops``, the op-recording mode) for the forwards run inside."""
        self.record_ops = ops
        handles = []
        for m, n in self.names.items():
            handles.append(m.register_forward_pre_hook(self._pre(n), with_kwargs=True))
            handles.append(m.register_forward_hook(self._post(n), with_kwargs=True, always_call=True))
        try:
            with _Mode(self):
                yield self
        finally:
            for h in handles:
                h.remove()
            self.stack.clear()

    # ------------------------------------------------------------- queries
    def where(self, module: str) -> str:
        """``module conv (Conv2d)`` / ``the model's forward (Net)``: a module named for the user."""
        if not module:
            return f"the forward of the model ({type(self.model).__name__})"
        mod = self.model.get_submodule(module)
        return f"module {module} ({type(mod).__name__})"

    def custom_functions(self) -> list[tuple]:
        """(autograd node, OpInfo) of every custom autograd Function in the recorded graph."""
        return [(fn, i) for fn, i in self.info.items() if isinstance(fn, torch.autograd.function.BackwardCFunction)]

    def layers_reaching_outputs(self) -> list[str]:
        """Prunable layers whose output channels reach a model output without passing another prunable layer."""
        return self.layers_feeding([t.grad_fn for t in self.outputs if t.grad_fn is not None])

    def layers_feeding(self, fns) -> list[str]:
        """Prunable layers whose output channels reach the autograd nodes ``fns`` without passing another one."""
        found: list[str] = []
        seen: set = set()
        stack = list(fns)
        while stack:
            fn = stack.pop()
            if fn in seen:
                continue
            seen.add(fn)
            layer = self.layer_out.get(fn)
            if layer is not None:
                if layer not in found:
                    found.append(layer)
                continue
            stack.extend(f for f, _ in fn.next_functions if f is not None)
        return found
