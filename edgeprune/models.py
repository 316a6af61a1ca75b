"""Built-in architectures, registered by name.

Every builder takes ``input_shape`` (C, H, W) without the batch and ``num_outputs``
(classes; ignored by reconstruction models) plus its own keyword options, and returns an
``nn.Module``. A compact model is rebuilt from ``(name, kwargs)`` + a pruning plan, so
builders must be deterministic functions of their arguments.

Residual blocks use :class:`Residual`: ``act(shortcut(x) + branch(x))``. The surgery finds
droppable branches by this class (and in user blocks whose forward traces to ``post(x + f(x))``,
see ``edgeprune/surgery/branches.py``): a block whose shortcut is the identity can lose its
whole branch (it becomes ``act(x)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import ConfigError

MODELS: dict[str, Callable[..., nn.Module]] = {}
MODEL_TASKS: dict[str, str] = {}


def register_model(name: str, task: str = "classification"):
    def deco(fn):
        MODELS[name] = fn
        MODEL_TASKS[name] = task
        fn.model_name = name
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(MODELS)


_INSTANCES: dict[str, nn.Module] = {}


def register_instance(model: nn.Module) -> str:
    """Make an in-memory module buildable by id (Python API); valid in this process only."""
    import copy

    key = f"memory:{type(model).__name__}-{id(model):x}"
    _INSTANCES[key] = copy.deepcopy(model).cpu().eval()
    return key


def is_user_model(name: str) -> bool:
    return ":" in name


def build_model(name: str, input_shape, num_outputs: int = 10, **kwargs) -> nn.Module:
    if name.startswith("memory:"):
        import copy

        if name not in _INSTANCES:
            raise ConfigError(f"model {name} was passed in memory to another process; pass a factory "
                              "(file.py:function) to make the run folder replayable")
        return copy.deepcopy(_INSTANCES[name])
    if is_user_model(name):
        from .errors import InputError
        from .imports import load_callable

        factory = load_callable(name, what="model factory")
        try:
            model = factory(**kwargs)
        except TypeError as e:
            raise ConfigError(f"model factory {name}: bad [model_options] ({e})") from None
        except Exception as e:  # the user's code: show its own error, on one line
            first = str(e).strip().splitlines()
            raise InputError(f"model factory {name} raised {type(e).__name__}: {first[0] if first else ''} "
                             "(fix the factory or its [model_options])") from None
        if not isinstance(model, nn.Module):
            raise InputError(f"model factory {name} returned {type(model).__name__}, not a torch.nn.Module")
        return model
    try:
        builder = MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of {list_models()} or give file.py:factory") from None
    try:
        return builder(tuple(int(s) for s in input_shape), int(num_outputs), **kwargs)
    except TypeError as e:
        raise ConfigError(f"model {name!r}: bad option ({e}); see `edgeprune models`") from None


def model_task(name: str) -> str:
    return MODEL_TASKS.get(name, "classification")


class Residual(nn.Module):
    """``act(shortcut(x) + branch(x))``; the branch is droppable when the shortcut is identity."""

    def __init__(self, branch: nn.Module, shortcut: nn.Module | None = None, act: nn.Module | None = None):
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()

    @property
    def droppable(self) -> bool:
        return isinstance(self.shortcut, nn.Identity)

    def forward(self, x):
        return self.act(self.shortcut(x) + self.branch(x))


class DroppedBranch(nn.Module):
    """What a :class:`Residual` becomes when its branch is removed: ``act(x)``."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.act = act

    def forward(self, x):
        return self.act(x)


def conv_bn(cin, cout, k=3, stride=1, groups=1, act: type[nn.Module] | None = nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


@register_model("mlp")
def mlp(input_shape, num_outputs, hidden=(64, 32)):
    n_in = 1
    for s in input_shape:
        n_in *= s
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    layers.append(nn.Linear(n_in, num_outputs))
    return nn.Sequential(*layers)


@register_model("cnn")
def cnn(input_shape, num_outputs, widths=(32, 64), hidden=64):
    """Small CNN: conv-bn-relu blocks (the second strided), flatten -> linear -> linear.

    The flatten -> linear coupling is deliberate: pruning the last conv removes whole
    spatial slabs of the first linear layer's inputs.
    """
    c, h, w = input_shape
    blocks = []
    for i, wd in enumerate(widths):
        blocks.append(conv_bn(c, wd, 3, stride=1 if i == 0 else 2))
        c = wd
        if i:
            h, w = (h + 1) // 2, (w + 1) // 2
    return nn.Sequential(
        *blocks,
        nn.Flatten(),
        nn.Linear(c * h * w, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_outputs),
    )


def _basic_block(cin, cout, stride):
    branch = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, 1, act=None))
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    return Residual(branch, shortcut, nn.ReLU())


@register_model("resnet")
def resnet(input_shape, num_outputs, widths=(16, 32, 64), blocks=2):
    """ResNet-style: a stem, stages of basic blocks (first of each later stage strided)."""
    c = input_shape[0]
    layers: list[nn.Module] = [conv_bn(c, widths[0], 3)]
    c = widths[0]
    for s, wd in enumerate(widths):
        for b in range(blocks):
            layers.append(_basic_block(c, wd, 2 if (b == 0 and s > 0) else 1))
            c = wd
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_outputs)]
    return nn.Sequential(*layers)


def _inverted_residual(cin, cout, stride, expand):
    hidden = cin * expand
    branch = nn.Sequential(
        conv_bn(cin, hidden, 1, act=nn.ReLU6),
        conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
        conv_bn(hidden, cout, 1, act=None),
    )
    if stride == 1 and cin == cout:
        return Residual(branch)
    return branch


@register_model("mobilenetv2")
def mobilenetv2(input_shape, num_outputs, widths=(16, 24, 32), expand=4, repeats=2):
    """MobileNetV2-style: inverted residuals with a depthwise 3x3, ReLU6 and linear bottleneck."""
    c = input_shape[0]
    layers: list[nn.Module] = [conv_bn(c, widths[0], 3, act=nn.ReLU6)]
    c = widths[0]
    for s, wd in enumerate(widths):
        for r in range(repeats):
            layers.append(_inverted_residual(c, wd, 2 if (r == 0 and s > 0) else 1, expand))
            c = wd
    layers += [conv_bn(c, 4 * c, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * c, num_outputs)]
    return nn.Sequential(*layers)


@register_model("autoencoder", task="reconstruction")
def autoencoder(input_shape, num_outputs=0, widths=(16, 32)):
    """Conv autoencoder: strided conv encoder, ConvTranspose decoder, sigmoid output in [0, 1]."""
    c = input_shape[0]
    enc: list[nn.Module] = []
    for wd in widths:
        enc += [nn.Conv2d(c, wd, 3, 2, 1), nn.ReLU()]
        c = wd
    dec: list[nn.Module] = []
    for wd in list(widths[-2::-1]) + [input_shape[0]]:
        dec += [nn.ConvTranspose2d(c, wd, 3, 2, 1, output_padding=1), nn.ReLU()]
        c = wd
    dec[-1] = nn.Sigmoid()
    return nn.Sequential(nn.Sequential(*enc), nn.Sequential(*dec))


class ConcatBlock(nn.Module):
    """Two parallel conv branches whose outputs are concatenated on channels."""

    def __init__(self, cin, c1, c2):
        super().__init__()
        self.a = conv_bn(cin, c1, 1)
        self.b = conv_bn(cin, c2, 3)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], dim=1)


@register_model("concat")
def concat(input_shape, num_outputs, widths=(16, 24), merge=32):
    """Inception-like: a stem, a channel-concat block, a merging conv, pooled classifier."""
    c = input_shape[0]
    return nn.Sequential(
        conv_bn(c, widths[0], 3),
        ConcatBlock(widths[0], widths[0], widths[1]),
        conv_bn(widths[0] + widths[1], merge, 3, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(merge, num_outputs),
    )


class RowsAsSequence(nn.Module):
    """(N, C, H, W) -> (N, C*H, W): an image read as a multi-channel 1-D signal."""

    def forward(self, x):
        return x.flatten(1, 2)


@register_model("conv1d")
def conv1d(input_shape, num_outputs, widths=(32, 64)):
    """Audio-style Conv1d net over the image rows read as a sequence (C*H channels, length W)."""
    c = input_shape[0] * input_shape[1]
    layers: list[nn.Module] = [RowsAsSequence()]
    for i, wd in enumerate(widths):
        layers += [nn.Conv1d(c, wd, 3, 1 if i == 0 else 2, 1, bias=False), nn.BatchNorm1d(wd), nn.ReLU()]
        c = wd
    layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(c, num_outputs)]
    return nn.Sequential(*layers)


# --------------------------------------------------------------- architecture ids
# A saved model names its architecture by this small JSON-able dict, never by a pickled
# class, so that ``load_compact`` can rebuild it: {"model", "input_shape", "num_outputs", "options"}.

def arch_spec(name: str, input_shape, num_outputs: int, options: dict | None = None) -> dict:
    return {"model": name, "input_shape": [int(s) for s in input_shape], "num_outputs": int(num_outputs), "options": dict(options or {})}


def build_arch(arch: dict) -> nn.Module:
    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.get("options", {}).items()}
    return build_model(arch["model"], arch["input_shape"], arch["num_outputs"], **opts)


def example_for(arch: dict) -> torch.Tensor:
    """A deterministic batch-1 input of the architecture's shape (for graph tracing)."""
    return torch.zeros(1, *arch["input_shape"])


def check_input_shape(model: nn.Module, arch: dict, option: str = "--input-shape") -> torch.Tensor:
    """Run the model once on the architecture's input shape and return its output; a rejection
    names the model, the shape tried, the model's own error and ``option`` (the flag to change)."""
    from .errors import InputError

    shape = "x".join(str(d) for d in [1, *arch["input_shape"]])
    try:
        with torch.no_grad():
            out = model.eval()(example_for(arch))
    except Exception as e:  # the user's model: show its own error
        raise InputError(f"model {arch['model']} rejects input shape {shape}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''} (set {option} to the shape it expects)") from None
    output_list(out, arch["model"])  # refuses anything but a tensor or a tuple of tensors
    return out


# --------------------------------------------------------------- several outputs
# The contract: a model returns one tensor, or a tuple (or list) of tensors. The FIRST is the task
# output: the loss, the metric, training and pruning use it. Every output is compacted, exported
# (named output_0 .. output_{N-1}) and verified in every artifact.

def output_list(out, name: str | None = None) -> list[torch.Tensor]:
    """``out`` as a list of tensors (one tensor -> [it]); anything else is refused in one line."""
    from .errors import InputError

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)) and out and all(isinstance(o, torch.Tensor) for o in out):
        return list(out)
    if isinstance(out, (tuple, list)) and out:
        bad = next(i for i, o in enumerate(out) if not isinstance(o, torch.Tensor))
        what = f"a {type(out).__name__} whose output {bad} is {type(out[bad]).__name__}"
    elif isinstance(out, dict):
        what = "a dict" + (f" ({', '.join(f'{k}: {type(v).__name__}' for k, v in list(out.items())[:3])})" if out else "")
    else:
        what = "None" if out is None else (f"an empty {type(out).__name__}" if isinstance(out, (tuple, list))
                                           else type(out).__name__)
    raise InputError(f"{f'model {name}' if name else 'the model'} returns {what}: return one tensor or a tuple of tensors (the first is the task "
                     "output: logits or the reconstruction)")


def primary_output(out) -> torch.Tensor:
    """The task output: the tensor itself, or the first of a tuple/list of outputs."""
    return out if isinstance(out, torch.Tensor) else out[0]


def output_shapes(out) -> list[list[int]]:
    """Per-sample shape of each output (the batch dimension dropped)."""
    return [list(o.shape[1:]) for o in output_list(out)]


def check_outputs(out, arch: dict, task: str, num_classes: int) -> None:
    """The model's (first) output on one example fits the task: one score per class, or the input's shape."""
    from .errors import InputError

    name = arch["model"]
    if not isinstance(out, torch.Tensor):  # several outputs: the first is the task output
        name, out = f"{name} (its first output, the task output)", primary_output(out)
    if task == "reconstruction":
        if tuple(out.shape[1:]) != tuple(arch["input_shape"]):
            raise InputError(f"model {name} outputs shape {tuple(out.shape[1:])} per sample, but reconstruction needs "
                             f"the input's shape {tuple(arch['input_shape'])}: make the decoder end at the input size")
        return
    if num_classes == 0:
        raise InputError("classification needs integer class labels 0..N-1, and these labels are not integers: "
                         "give integer labels, or --task reconstruction")
    width = int(out[0].numel()) if out.ndim else 1
    if width != num_classes:
        raise InputError(f"model {name} outputs {width} value(s) per sample, but the data has {num_classes} classes: "
                         f"make its last layer output {num_classes} (e.g. nn.Linear(..., {num_classes}), or a "
                         "[model_options] for it), or name every class in [data] classes")


def _load_error(path: str, e: Exception) -> str:
    """Why torch.load(weights_only=True) refused ``path``, and how to save a loadable file."""
    import re

    fix = "save the weights with torch.save(model.state_dict(), path)"
    text = str(e)
    if "Unsupported global" in text:
        m = re.search(r"GLOBAL (\S+)", text)
        what = f" ({m.group(1)})" if m else ""
        return f"{path} holds a pickled object{what}, not a state_dict (a pickled model is never loaded): {fix}"
    if isinstance(e, EOFError) or Path(path).stat().st_size == 0:
        why = "the file is empty or truncated"
    elif "zip archive" in text:
        why = "the file is a damaged zip archive (an interrupted save or download?)"
    else:
        why = "the file is not a torch.save file (unreadable pickle data)"
    return f"weights file {path} cannot be loaded: {why}; {fix}"


def load_weights(model: nn.Module, path: str, shape_option: str = "--input-shape") -> None:
    """Load a state_dict with weights_only=True; refuse pickled modules; name the first mismatch
    and the fix (``shape_option``: how the caller sets the input shape)."""
    from .errors import InputError

    if not Path(path).is_file():
        raise InputError(f"weights file {path} not found")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file: each gets a one-line reason
        raise InputError(_load_error(path, e)) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]  # an edgeprune checkpoint
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"{path} is not a state_dict (a dict of tensors, got {type(sd).__name__}): "
                         "save it with torch.save(model.state_dict(), path)")
    fix = (f"pass the [model_options] (and {shape_option}) the weights were saved with, or weights saved from "
           "this model's factory")
    own = model.state_dict()
    for k, v in own.items():
        if k not in sd:
            raise InputError(f"weights {path} do not fit the model: tensor {k} {tuple(v.shape)} is missing from the "
                             f"file; {fix}")
        if tuple(sd[k].shape) != tuple(v.shape):
            raise InputError(f"weights {path} do not fit the model: tensor {k} is {tuple(sd[k].shape)} in the file, "
                             f"{tuple(v.shape)} in the model; {fix}")
    extra = [k for k in sd if k not in own]
    if extra:
        raise InputError(f"weights {path} do not fit the model: the file has tensor {extra[0]} that the model lacks; {fix}")
    model.load_state_dict(sd)
