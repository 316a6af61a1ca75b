"""Structural surgery: one test per coupling pattern, a property test over random
architectures and plans (real digits inputs), replay, rounding, grouped convolutions,
output-layer protection, residual branches written inline, and the refusal of unsupported
patterns (one-line errors naming the op and its module)."""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from edgeprune.errors import InputError, UnsupportedModelError, VerificationError
from edgeprune.models import Residual, arch_spec, build_arch, build_model, conv_bn, example_for
from edgeprune.surgery import (
    PruningPlan, analyze, compact, compact_and_verify, load_compact, masked, plan_from_scores, round_width,
    save_compact, verify,
)
from edgeprune.surgery.masking import BranchScales, ChannelMasks


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics, so a wrong channel mapping cannot hide behind identity BNs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


def _random_plan(graph, seed: int, keep: float = 0.5, multiple: int = 1, drop: int = 0) -> PruningPlan:
    rng = np.random.default_rng(seed)
    scores = {g: rng.random(grp.size) for g, grp in graph.groups.items()}
    widths = {g: max(1, int(grp.size * keep)) for g, grp in graph.groups.items()}
    return plan_from_scores(graph, scores, widths, width_multiple=multiple, dropped=list(graph.branches)[:drop])


@pytest.fixture(scope="module")
def digits_inputs():
    from edgeprune.data import load_dataset

    ds = load_dataset("digits")
    return torch.from_numpy(ds.normalize(ds.x_test[:64]))


# one built-in model per coupling pattern: (model, what it exercises, branches to drop)
PATTERNS = [
    ("mlp", "linear -> linear units", 0),
    ("cnn", "conv -> BN, flatten -> linear (spatial expansion)", 0),
    ("resnet", "residual add across blocks + strided downsample shortcut", 1),
    ("mobilenetv2", "depthwise conv, inverted residual, ReLU6", 1),
    ("autoencoder", "ConvTranspose in/out channels", 0),
    ("concat", "channel concat slices feeding one conv", 0),
    ("conv1d", "Conv1d + BatchNorm1d", 0),
]


@pytest.mark.parametrize("name,pattern,drop", PATTERNS, ids=[p[0] for p in PATTERNS])
def test_coupling_pattern_compacts_exactly_and_exports(name, pattern, drop, digits_inputs, tmp_path):
    model = _randomize_bn(build_model(name, (1, 8, 8), 10))
    example = torch.zeros(1, 1, 8, 8)
    graph = analyze(model, example)
    assert graph.groups, f"{pattern}: no prunable group found"
    plan = _random_plan(graph, seed=1, keep=0.5, drop=drop)
    small, report = compact_and_verify(model, plan, example, digits_inputs, graph)
    # really smaller, exactly as predicted, and equal to the masked model
    assert report["params"] < graph.dense_cost()["params"]
    assert sum(p.numel() for p in small.parameters()) == plan.predicted_cost(graph)["params"]
    assert report["rel_diff"] <= 1e-5
    # every coupled width shrank where the plan said
    for g, idx in plan.keep.items():
        if any(g.startswith(b + ".") for b in plan.dropped):
            continue  # the group's layers left with their branch
        mod = small.get_submodule(g)
        width = getattr(mod, "out_channels", None) or getattr(mod, "out_features")
        assert width == len(idx), f"{g}: {width} != {len(idx)}"
    # the compact model exports and runs in onnxruntime with the same outputs
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(small, (example,), str(path), dynamo=True, external_data=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = digits_inputs[:1].numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        want = small(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_masked_model_differs_from_dense_so_verification_is_meaningful(digits_inputs):
    model = _randomize_bn(build_model("resnet", (1, 8, 8), 10))
    example = torch.zeros(1, 1, 8, 8)
    graph = analyze(model, example)
    plan = _random_plan(graph, seed=2, keep=0.5)
    ref = masked(model, plan, example, graph)
    with torch.no_grad():
        assert (ref(digits_inputs) - model(digits_inputs)).abs().max() > 1e-3
    # a deliberately wrong compaction (different kept channels) is caught
    other = _random_plan(graph, seed=3, keep=0.5)
    wrong = compact(model, other, example, graph)
    with pytest.raises(VerificationError):
        verify(ref, wrong, digits_inputs)


def test_dropped_residual_branch_becomes_identity(digits_inputs):
    model = _randomize_bn(build_model("resnet", (1, 8, 8), 10))
    example = torch.zeros(1, 1, 8, 8)
    graph = analyze(model, example)
    # only identity-shortcut blocks are droppable: 6 blocks, 2 of them have a strided downsample
    assert len(graph.branches) == 4
    for name in graph.branches:
        assert isinstance(model.get_submodule(name).shortcut, nn.Identity)
    plan = PruningPlan(dropped=list(graph.branches))
    small, report = compact_and_verify(model, plan, example, digits_inputs, graph)
    for name in graph.branches:
        block = small.get_submodule(name)
        assert not hasattr(block, "branch"), "dropped branch still present"
    dense = graph.dense_cost()
    assert report["macs"] == dense["macs"] - sum(b.macs for b in graph.branches.values())


def test_per_channel_costs_match_the_table():
    model = build_model("cnn", (1, 8, 8), 10)
    graph = analyze(model, torch.zeros(1, 1, 8, 8))
    conv2 = graph.groups["1.0"]  # second conv: 3x3 over 32 in-channels, feeds flatten->linear over 4x4
    assert conv2.params_per_channel == 32 * 9 + 2 + 16 * 64  # filter + BN + linear input slab
    assert conv2.macs_per_channel == 32 * 9 * 16 + 16 * 64


def test_plan_json_roundtrip_and_validation(tmp_path):
    model = build_model("resnet", (1, 8, 8), 10)
    graph = analyze(model, torch.zeros(1, 1, 8, 8))
    plan = _random_plan(graph, seed=0, drop=2)
    plan.save(tmp_path / "plan.json")
    again = PruningPlan.load(tmp_path / "plan.json")
    assert again.to_dict() == plan.to_dict()
    bad = PruningPlan(keep={"no.such.layer": [0]})
    with pytest.raises(InputError, match="no.such.layer"):
        bad.validate(graph)
    with pytest.raises(InputError, match="out-of-range"):
        PruningPlan(keep={next(iter(graph.groups)): [0, 999]}).validate(graph)


def test_validate_refuses_widths_off_the_width_multiple():
    model = build_model("resnet", (1, 8, 8), 10)
    graph = analyze(model, torch.zeros(1, 1, 8, 8))
    g = next(iter(graph.groups))  # 16 channels
    PruningPlan(keep={g: list(range(8))}, width_multiple=4).validate(graph)  # a multiple: fine
    with pytest.raises(InputError, match=rf"keeps 5 channels of group '{g}'.*width_multiple 4"):
        PruningPlan(keep={g: list(range(5))}, width_multiple=4).validate(graph)
    with pytest.raises(InputError, match="width_multiple 8"):
        PruningPlan(keep={g: list(range(12))}, width_multiple=8).validate(graph)


def test_replay_rebuilds_compact_model_from_arch_plan_and_weights(tmp_path, digits_inputs):
    arch = arch_spec("mobilenetv2", (1, 8, 8), 10)
    model = _randomize_bn(build_arch(arch))
    example = example_for(arch)
    graph = analyze(model, example)
    plan = _random_plan(graph, seed=4, keep=0.4, multiple=4, drop=1)
    small, _ = compact_and_verify(model, plan, example, digits_inputs, graph)
    save_compact(tmp_path / "m.pt", arch, plan, small)
    # the file holds only tensors and plain containers: weights_only loading works
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    assert set(blob) >= {"arch", "plan", "state_dict"}
    again, plan2, arch2 = load_compact(tmp_path / "m.pt", build_arch, example_for)
    assert plan2.to_dict() == plan.to_dict() and arch2 == arch
    with torch.no_grad():
        assert torch.equal(again(digits_inputs), small(digits_inputs))


def test_corrupt_checkpoint_is_a_clean_input_error(tmp_path):
    p = tmp_path / "bad.pt"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="corrupt"):
        load_compact(p, build_arch, example_for)


@pytest.mark.parametrize("n,multiple,size,expected", [(5, 4, 32, 8), (8, 4, 32, 8), (1, 8, 6, 6), (0, 1, 10, 1), (33, 8, 40, 40)])
def test_round_width_never_keeps_fewer(n, multiple, size, expected):
    assert round_width(n, multiple, size) == expected


def test_hardware_rounding_keeps_multiples(digits_inputs):
    model = _randomize_bn(build_model("resnet", (1, 8, 8), 10))
    example = torch.zeros(1, 1, 8, 8)
    graph = analyze(model, example)
    plan = _random_plan(graph, seed=5, keep=0.3, multiple=8)
    for g, idx in plan.keep.items():
        assert len(idx) % 8 == 0 or len(idx) == graph.groups[g].size
        assert len(idx) >= int(graph.groups[g].size * 0.3)
    compact_and_verify(model, plan, example, digits_inputs, graph)



class _CatResidual(nn.Module):
    """relu(cat(a(x), b(x)) + x): one coupled group owned in parts by a, b and the stem."""

    def __init__(self, c):
        super().__init__()
        self.a = conv_bn(c, c // 2, 3, act=None)
        self.b = conv_bn(c, c // 2, 3, act=None)

    def forward(self, x):
        return torch.relu(torch.cat([self.a(x), self.b(x)], 1) + x)


def test_plan_from_scores_rounds_up_again_after_giving_every_layer_a_channel(digits_inputs):
    model = _randomize_bn(nn.Sequential(conv_bn(1, 8), _CatResidual(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                        nn.Linear(8, 10)))
    example = torch.zeros(1, 1, 8, 8)
    graph = analyze(model, example)
    g = next(n for n, grp in graph.groups.items() if "1.a.0:out" in grp.members and "1.b.0:out" in grp.members)
    scores = {n: np.arange(grp.size, 0, -1, dtype=float) for n, grp in graph.groups.items()}  # a's channels best
    plan = plan_from_scores(graph, scores, {g: 2}, width_multiple=2)
    # 2 of a's channels, then b's best one (every layer keeps a channel), then one more to reach a multiple of 2
    assert len(plan.keep[g]) == 4 and {0, 1, 4} <= set(plan.keep[g])
    plan.validate(graph)
    compact_and_verify(model, plan, example, digits_inputs, graph)


# --------------------------------------------------- models for the patterns below

def _head(c: int, classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))


def _onnx_matches(model: nn.Module, example: torch.Tensor, x: torch.Tensor, path) -> None:
    """The model exports to ONNX and onnxruntime computes what torch computes on ``x``."""
    torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for i in range(min(4, len(x))):
        xi = x[i : i + 1].numpy()
        got = sess.run(None, {sess.get_inputs()[0].name: xi})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(xi)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _single_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


class InlineResidual(nn.Module):
    """A user's residual block written in forward(): relu(x + c2(c1(x)))."""

    def __init__(self, c):
        super().__init__()
        self.c1 = conv_bn(c, c, 3)
        self.c2 = conv_bn(c, c, 3, act=None)

    def forward(self, x):
        return torch.relu(x + self.c2(self.c1(x)))


class TorchvisionStyleBlock(nn.Module):
    """torchvision's BasicBlock layout: one ReLU module used twice, ``out += identity``, optional downsample."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


# ------------------------------------------------------------ grouped convolutions

def test_grouped_conv_keeps_its_widths_and_the_rest_compacts_exactly(digits_inputs, tmp_path):
    model = _randomize_bn(nn.Sequential(conv_bn(1, 16), conv_bn(16, 16, groups=4), conv_bn(16, 8), _head(8)))
    example = torch.zeros(1, 1, 8, 8)
    graph = analyze(model, example)
    # the group feeding the grouped conv and the one it produces stay whole; the others are prunable
    assert "0.0" not in graph.groups and "1.0" not in graph.groups
    assert set(graph.groups) == {"2.0"}
    assert {"0.0", "1.0"} <= set(graph.ignored)
    plan = _random_plan(graph, seed=3, keep=0.5)
    small, report = compact_and_verify(model, plan, example, digits_inputs, graph)
    assert small.get_submodule("1.0").in_channels == 16 and small.get_submodule("1.0").groups == 4
    assert small.get_submodule("2.0").out_channels == 4
    assert report["params"] < graph.dense_cost()["params"] and report["rel_diff"] <= 1e-5
    _onnx_matches(small, example, digits_inputs, tmp_path / "grouped.onnx")


def test_grouped_conv_inside_a_residual_freezes_the_coupled_channels(digits_inputs):
    block = Residual(nn.Sequential(conv_bn(8, 12, 1), conv_bn(12, 8, 1), conv_bn(8, 8, 3, groups=2, act=None)),
                     act=nn.ReLU())
    model = _randomize_bn(nn.Sequential(conv_bn(1, 8), block, conv_bn(8, 12), _head(12)))
    example = torch.zeros(1, 1, 8, 8)
    graph = analyze(model, example)
    # frozen: the residual group (stem + the grouped conv's output) and the 1x1 feeding the grouped conv;
    # the first 1x1 of the branch and the last conv stay prunable
    assert set(graph.groups) == {"1.branch.0.0", "2.0"}
    small, report = compact_and_verify(model, _random_plan(graph, seed=4, keep=0.5), example, digits_inputs, graph)
    assert small.get_submodule("1.branch.0.0").out_channels == 6 and small.get_submodule("1.branch.1.0").out_channels == 8
    assert small.get_submodule("1.branch.2.0").out_channels == 8 and report["rel_diff"] <= 1e-5


# ------------------------------------------------------------ output layers

class AuxAfterHead(nn.Module):
    """An auxiliary conv that runs after the classifier and reaches no output."""

    def __init__(self):
        super().__init__()
        self.body = conv_bn(1, 8)
        self.mid = conv_bn(8, 8)
        self.head = _head(8)
        self.aux = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        f = self.mid(self.body(x))
        y = self.head(f)
        self.aux(f)  # e.g. a training-time side output
        return y


class TwoHeadsConcat(nn.Module):
    """The output concatenates two classifiers: both widths are the model's output."""

    def __init__(self):
        super().__init__()
        self.body = conv_bn(1, 8)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.a = nn.Linear(8, 6)
        self.b = nn.Linear(8, 4)

    def forward(self, x):
        f = self.pool(self.body(x))
        return torch.cat([self.a(f), self.b(f)], 1)


def test_every_layer_reaching_an_output_keeps_its_width(digits_inputs):
    example = torch.zeros(1, 1, 8, 8)
    aux = _randomize_bn(AuxAfterHead())
    graph = analyze(aux, example)
    assert "head.2" not in graph.groups and "head.2" in graph.ignored  # the classifier, not the aux conv
    # the aux conv's input is not in Torch-Pruning's graph (it reaches no output): its producer stays whole
    assert "mid.0" not in graph.groups and set(graph.groups) == {"body.0"}
    small, _ = compact_and_verify(aux, _random_plan(graph, seed=0), example, digits_inputs, graph)
    with torch.no_grad():
        assert small(digits_inputs).shape == (len(digits_inputs), 10)

    heads = _randomize_bn(TwoHeadsConcat())
    graph = analyze(heads, example)
    assert {"a", "b"} <= set(graph.ignored) and not {"a", "b"} & set(graph.groups)
    small, _ = compact_and_verify(heads, _random_plan(graph, seed=0), example, digits_inputs, graph)
    with torch.no_grad():
        assert small(digits_inputs).shape == (len(digits_inputs), 10)


# ------------------------------------------------------------ residual branches written inline

def test_inline_residual_block_is_found_and_dropped_exactly(digits_inputs, tmp_path):
    model = _randomize_bn(nn.Sequential(conv_bn(1, 8), InlineResidual(8), TorchvisionStyleBlock(8, 8),
                                        TorchvisionStyleBlock(8, 16, stride=2), _head(16)))
    example = torch.zeros(1, 1, 8, 8)
    graph = analyze(model, example)
    # identity-shortcut blocks are droppable; the one with a downsample shortcut is not
    assert set(graph.branches) == {"1", "2"}
    assert graph.branches["1"].output == "1.c2" and graph.branches["2"].output == "2.bn2"
    assert set(graph.branches["2"].layers) == {"2.conv1", "2.bn1", "2.conv2", "2.bn2"}
    # channels stay coupled across the inline adds: stem + both blocks' last layers are one group
    stem = next(g for g in graph.groups.values() if "0.0:out" in g.members)
    assert {"1.c2.0:out", "2.conv2:out", "3.conv1:in", "3.downsample.0:in"} <= set(stem.members)
    plan = _random_plan(graph, seed=7, keep=0.5, drop=2)
    small, report = compact_and_verify(model, plan, example, digits_inputs, graph)
    assert report["rel_diff"] <= 1e-5
    assert report["macs"] < graph.cost(plan.kept_widths(graph))["macs"]  # the dropped branches' MACs are gone
    for b in ("1", "2"):
        assert not any(isinstance(m, nn.Conv2d) for m in small.get_submodule(b).modules()), f"block {b} kept a conv"
    # dropped: the post-add ReLU stays, x + f(x) became x
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(small.get_submodule("1")(x), torch.relu(x))
    _onnx_matches(small, example, digits_inputs, tmp_path / "inline.onnx")
    # replay: the compact structure is rebuilt from the original model + plan, the weights load strictly
    save_compact(tmp_path / "inline.pt", {"model": "test-inline"}, plan, small)
    again, _, _ = load_compact(tmp_path / "inline.pt", lambda arch: _copy(model), lambda arch: example)
    with torch.no_grad():
        assert torch.equal(again(digits_inputs), small(digits_inputs))


def test_inline_residual_branch_scale_hooks_the_branch_output(digits_inputs):
    model = _randomize_bn(nn.Sequential(conv_bn(1, 8), InlineResidual(8), _head(8)))
    example = torch.zeros(1, 1, 8, 8)
    graph = analyze(model, example)
    ref = masked(model, PruningPlan(dropped=["1"]), example, graph)
    scales = BranchScales(model, ["1"])
    try:
        with torch.no_grad():
            scales.values = {"1": torch.tensor(0.0)}
            assert torch.allclose(model(digits_inputs), ref(digits_inputs), atol=1e-6)
            scales.values = {}
            assert (model(digits_inputs) - ref(digits_inputs)).abs().max() > 1e-3
    finally:
        scales.remove()


def test_channel_masks_at_zero_equal_the_masked_reference_with_grouped_and_inline_blocks(digits_inputs):
    model = _randomize_bn(nn.Sequential(conv_bn(1, 8), InlineResidual(8), conv_bn(8, 16), conv_bn(16, 16, groups=4),
                                        conv_bn(16, 8), _head(8)))
    example = torch.zeros(1, 1, 8, 8)
    graph = analyze(model, example)
    plan = _random_plan(graph, seed=2, keep=0.5)
    masks = ChannelMasks(model, graph)
    z = torch.ones(masks.n)
    for g, idx in plan.keep.items():
        zg = torch.zeros(graph.groups[g].size)
        zg[idx] = 1
        z[masks.offsets[g] : masks.offsets[g] + len(zg)] = zg
    folded = _copy(model)
    masks.fold_(folded, z)
    ref = masked(model, plan, example, graph)
    with torch.no_grad():
        assert torch.allclose(folded(digits_inputs), ref(digits_inputs), atol=1e-5)


def _copy(m):
    import copy

    return copy.deepcopy(m)


# ------------------------------------------------------------ unsupported patterns

class _Scale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g * 2


class ScaledBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = conv_bn(8, 8, 3)

    def forward(self, x):
        return _Scale.apply(self.conv(x))


class CustomFnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(1, 8, 3)
        self.block = ScaledBlock()
        self.head = _head(8)

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


class HardCodedView(nn.Module):
    """A hard-coded reshape that is not a flatten (a flatten is rewritten: test_surgery_patterns.py)."""

    def __init__(self):
        super().__init__()
        self.conv = conv_bn(1, 8, 3)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.conv(x).view(-1, 8, 64).mean(2))


class _Between(nn.Module):
    """conv -> op -> conv -> head, the op in a named submodule's forward."""

    def __init__(self, op, cin_b=8):
        super().__init__()
        self.a = conv_bn(1, 8)
        self.mix = _Op(op)
        self.b = conv_bn(cin_b, 8)
        self.head = _head(8)

    def forward(self, x):
        return self.head(self.b(self.mix(self.a(x))))


class _Op(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, x):
        return self.op(x)


def _set_channels(y, key):
    y = y.clone()
    y[key] = 0
    return y


def _shuffle(y):
    b, c, h, w = y.shape
    return y.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)


class LayerNormCoupled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.head = _head(8)

    def forward(self, x):
        return self.head(self.norm(self.conv(x)))


def test_custom_autograd_function_is_refused_naming_function_and_module():
    with pytest.raises(UnsupportedModelError) as e:
        analyze(CustomFnNet().eval(), torch.zeros(1, 1, 8, 8))
    msg = _single_line_error(e)
    assert "'_Scale'" in msg and "module block (ScaledBlock)" in msg, msg


def test_hard_coded_view_is_refused_in_analyze_naming_the_view_and_module():
    with pytest.raises(UnsupportedModelError) as e:
        analyze(HardCodedView().eval(), torch.zeros(1, 1, 8, 8))
    msg = _single_line_error(e)
    assert "at op view in the forward of the model (HardCodedView) (test_surgery.py:" in msg and "hard-coded" in msg, msg
    assert "x.flatten(1)" in msg


@pytest.mark.parametrize("op,cin_b,expect", [
    (lambda y: torch.flip(y, [1]), 8, r"flip\(\[1\]\) in module mix \(_Op\) is not an op"),
    (lambda y: y.mean(1, keepdim=True).expand_as(y) * y, 8, r"mean\(1.*\) in module mix \(_Op\) reduces over the channel"),
    (lambda y: _set_channels(y, (slice(None), slice(0, 4))), 8, r"__setitem__\(.*slice\(0, 4, None\).*\) in module mix"),
], ids=["flip", "channel-mean", "channel-assignment"])
def test_unknown_channel_ops_are_refused_in_analyze_naming_op_and_module(op, cin_b, expect):
    with pytest.raises(UnsupportedModelError) as e:
        analyze(_Between(op, cin_b).eval(), torch.zeros(1, 1, 8, 8))
    msg = _single_line_error(e)
    assert re.search(expect, msg), msg
    assert "layer a.0" in msg and "ignored_layers=['a.0']" in msg, msg
    # the advice works: with a.0 kept whole, the rest of the model is analysed and cut
    model = _randomize_bn(_Between(op, cin_b))
    graph = analyze(model, torch.zeros(1, 1, 8, 8), ignored_layers=["a.0"])
    assert set(graph.groups) == {"b.0"}
    compact_and_verify(model, _random_plan(graph, seed=0), torch.zeros(1, 1, 8, 8), torch.randn(4, 1, 8, 8), graph)


def test_channel_shuffle_keeps_the_groups_through_it_whole_and_the_rest_compacts(digits_inputs):
    graph = analyze(_Between(_shuffle).eval(), torch.zeros(1, 1, 8, 8))
    assert "a.0" not in graph.groups and "b.0" in graph.groups
    assert re.search(r"view\(1, 2, 4, 8, 8\) in module mix \(_Op\), which splits or regroups the channel dimension",
                     graph.frozen["a.0"])


@pytest.mark.parametrize("op,cin_b,expect", [
    (lambda y: y.permute(0, 2, 1, 3), 8, r"permute\(0, 2, 1, 3\) in module mix \(_Op\), which moves the channel dimension"),
    (lambda y: y[:, :4], 4, r"__getitem__\(.*slice\(None, 4, None\).*\) in module mix \(_Op\), which indexes the channel"),
], ids=["permute", "channel-slice"])
def test_layout_op_on_the_channels_keeps_the_groups_through_it_whole(op, cin_b, expect, digits_inputs):
    """A permute that moves the channels or a slice of them is what ignored_layers would be told for: the group
    through it stays whole (named in graph.frozen), the other groups are cut and verified."""
    example = torch.zeros(1, 1, 8, 8)
    model = _randomize_bn(_Between(op, cin_b))
    graph = analyze(model, example)
    assert "a.0" not in graph.groups and "b.0" in graph.groups
    assert re.search(expect + r".*\(a layout change\)", graph.frozen["a.0"]), graph.frozen
    _, report = compact_and_verify(model, _random_plan(graph, seed=0), example, digits_inputs, graph)
    assert report["rel_diff"] <= 1e-5


def test_ops_that_keep_channels_are_accepted(digits_inputs):
    ok = [lambda y: y[:, :, 1:-1], lambda y: torch.nn.functional.pad(y, (1, 1, 1, 1)),
          lambda y: y * torch.sigmoid(y.mean((2, 3), keepdim=True)), lambda y: y.transpose(2, 3),
          lambda y: torch.nn.functional.interpolate(y, scale_factor=2.0),
          lambda y: _set_channels(y, (slice(None), slice(None), 0))]
    example = torch.zeros(1, 1, 8, 8)
    for op in ok:
        model = _randomize_bn(_Between(op))
        graph = analyze(model, example)
        assert "a.0" in graph.groups
        _, report = compact_and_verify(model, _random_plan(graph, seed=1), example, digits_inputs, graph)
        assert report["rel_diff"] <= 1e-5


def test_unmodelled_layer_in_a_group_keeps_that_group_whole_naming_the_layer():
    graph = analyze(LayerNormCoupled().eval(), torch.zeros(1, 1, 8, 8))
    assert "conv" not in graph.groups
    assert "norm (GroupNorm), a layer edgeprune does not cut" in graph.frozen["conv"]


# ------------------------------------------------------------ property test

class RandomNet(nn.Module):
    """A random 2-D or 1-D stack of blocks, then a head (pooled linear or flatten -> linear stack).

    2-D blocks: conv, Residual, inline residual, strided downsample residual, depthwise,
    grouped conv, ConvTranspose, concat. 1-D: conv1d, residual conv1d, grouped conv1d.
    """

    def __init__(self, dims, spec, head, in_ch=1, size=8, classes=10):
        super().__init__()
        layers, c = [], in_ch
        if dims == 1:
            layers.append(_Rows())
            c, size = in_ch * size, size
        for kind, w in spec:
            layer, c, size = _block(dims, kind, c, w, size)
            layers.append(layer)
        self.body = nn.Sequential(*layers)
        if head[0] == "pool":
            pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool1d(1)
            self.head = nn.Sequential(pool, nn.Flatten(), nn.Linear(c, classes))
        else:
            n, hidden = c * size ** dims, []
            for h in head[1]:
                hidden += [nn.Linear(n, h), nn.ReLU()]
                n = h
            self.head = nn.Sequential(nn.Flatten(), *hidden, nn.Linear(n, classes))

    def forward(self, x):
        return self.head(self.body(x))


class _Rows(nn.Module):
    def forward(self, x):
        return x.flatten(1, 2)


def _conv(dims, cin, cout, k=3, stride=1, groups=1, act=True):
    conv = (nn.Conv2d if dims == 2 else nn.Conv1d)(cin, cout, k, stride, k // 2, groups=groups, bias=False)
    norm = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(cout)
    return nn.Sequential(conv, norm, nn.ReLU()) if act else nn.Sequential(conv, norm)


def _block(dims, kind, c, w, size):
    """(module, out channels, out spatial size) of one block."""
    if kind == "conv":
        return _conv(dims, c, w), w, size
    if kind == "res":
        return Residual(nn.Sequential(_conv(dims, c, w), _conv(dims, w, c, act=False)), act=nn.ReLU()), c, size
    if kind == "inline":
        return _InlineBlock(_conv(dims, c, w), _conv(dims, w, c, act=False)), c, size
    if kind == "down" and size >= 4:
        shortcut = _conv(dims, c, w, 1, 2, act=False)
        return Residual(nn.Sequential(_conv(dims, c, w, 3, 2), _conv(dims, w, w, act=False)), shortcut, nn.ReLU()), \
            w, (size + 1) // 2
    if kind == "gconv":
        g = 2 if c % 2 == 0 else 1
        cout = g * max(1, w // g)
        return _conv(dims, c, cout, groups=g), cout, size
    if kind == "dw" and dims == 2:
        return nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU6()), c, size
    if kind == "convT" and dims == 2:
        return nn.Sequential(nn.ConvTranspose2d(c, w, 3, 1, 1), nn.ReLU()), w, size
    if kind == "cat" and dims == 2:
        return _Cat(c, w), c + w, size
    return _conv(dims, c, w), w, size  # a kind that does not apply here: a plain conv


class _InlineBlock(nn.Module):
    def __init__(self, f, g):
        super().__init__()
        self.f, self.g = f, g

    def forward(self, x):
        return torch.relu(x + self.g(self.f(x)))


class _Cat(nn.Module):
    def __init__(self, c, w):
        super().__init__()
        self.a = conv_bn(c, w, 1)

    def forward(self, x):
        return torch.cat([x, self.a(x)], 1)


KINDS = ["conv", "res", "inline", "down", "gconv", "dw", "convT", "cat"]
block = st.tuples(st.sampled_from(KINDS), st.integers(2, 12))
specs = st.tuples(st.integers(2, 12), st.lists(block, max_size=4)).map(lambda t: [("conv", t[0])] + t[1])
heads = st.one_of(st.just(("pool", ())), st.tuples(st.just("flatten"), st.lists(st.integers(4, 24), max_size=2)))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dims=st.sampled_from([2, 2, 1]), spec=specs, head=heads, keep=st.floats(0.1, 1.0), seed=st.integers(0, 10_000),
       multiple=st.sampled_from([1, 2, 4]), drop=st.integers(0, 2))
def test_property_random_architectures_and_plans(dims, spec, head, keep, seed, multiple, drop, digits_inputs):
    """Any generated model compacts to exactly the masked model on real digits, with exactly the predicted size."""
    torch.manual_seed(seed)
    model = _randomize_bn(RandomNet(dims, spec, head), seed)
    example = torch.zeros(1, 1, 8, 8)
    graph = analyze(model, example)
    assert "head." + str(len(model.head) - 1) in graph.ignored  # the classifier keeps its 10 outputs
    plan = _random_plan(graph, seed, keep=keep, multiple=multiple, drop=drop)
    plan.validate(graph)
    small, report = compact_and_verify(model, plan, example, digits_inputs[:16], graph)
    assert report["rel_diff"] <= 1e-5
    assert sum(p.numel() for p in small.parameters()) == plan.predicted_cost(graph)["params"]
    for g, idx in plan.keep.items():
        assert len(idx) % multiple == 0 or len(idx) == graph.groups[g].size
