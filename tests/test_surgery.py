"""Structural surgery: one test per coupling pattern, a property test over random
architectures and plans, replay, rounding, and the refusal of unsupported patterns."""

from __future__ import annotations

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


class _Scale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g * 2


class CustomFnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = conv_bn(1, 8, 3)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(_Scale.apply(self.conv(x)))


class HardCodedView(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = conv_bn(1, 8, 3)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(self.conv(x).view(-1, 8 * 8 * 8))


class LayerNormCoupled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(self.norm(self.conv(x)))


def test_custom_autograd_function_is_refused_by_name():
    with pytest.raises(UnsupportedModelError, match="_Scale"):
        analyze(CustomFnNet().eval(), torch.zeros(1, 1, 8, 8))


def test_hard_coded_view_is_refused_with_module_name(digits_inputs):
    model = HardCodedView().eval()
    example = torch.zeros(1, 1, 8, 8)
    graph = analyze(model, example)
    plan = _random_plan(graph, seed=0)
    with pytest.raises(UnsupportedModelError, match=r"module fc \(Linear\).*hard-coded shape"):
        compact_and_verify(model, plan, example, digits_inputs, graph)


def test_unmodelled_layer_in_a_group_is_refused_by_name():
    with pytest.raises(UnsupportedModelError, match="norm"):
        analyze(LayerNormCoupled().eval(), torch.zeros(1, 1, 8, 8))


# ------------------------------------------------------------ property test

class RandomNet(nn.Module):
    """A random stack of conv / residual / depthwise / concat blocks, then a head."""

    def __init__(self, spec, in_ch=1, classes=10):
        super().__init__()
        layers, c = [], in_ch
        for kind, w in spec:
            if kind == "conv":
                layers.append(conv_bn(c, w, 3))
                c = w
            elif kind == "res":
                layers.append(Residual(nn.Sequential(conv_bn(c, w, 3), conv_bn(w, c, 3, act=None)), act=nn.ReLU()))
            elif kind == "dw":
                layers.append(conv_bn(c, c, 3, groups=c, act=nn.ReLU6))
            elif kind == "cat":
                layers.append(_Cat(c, w))
                c = c + w
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * 64, classes)) if spec[-1][0] == "conv" else \
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))

    def forward(self, x):
        return self.head(self.body(x))


class _Cat(nn.Module):
    def __init__(self, c, w):
        super().__init__()
        self.a = conv_bn(c, w, 1)

    def forward(self, x):
        return torch.cat([x, self.a(x)], 1)


block = st.tuples(st.sampled_from(["conv", "res", "dw", "cat"]), st.integers(2, 12))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.lists(block, min_size=1, max_size=5).filter(lambda s: s[0][0] == "conv"),
       keep=st.floats(0.1, 1.0), seed=st.integers(0, 10_000), multiple=st.sampled_from([1, 2, 4]),
       drop=st.integers(0, 2))
def test_property_random_architectures_and_plans(spec, keep, seed, multiple, drop):
    torch.manual_seed(seed)
    model = _randomize_bn(RandomNet(spec), seed)
    example = torch.zeros(1, 1, 8, 8)
    graph = analyze(model, example)
    plan = _random_plan(graph, seed, keep=keep, multiple=multiple, drop=drop)
    inputs = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    small, report = compact_and_verify(model, plan, example, inputs, graph)
    assert report["rel_diff"] <= 1e-5
    assert sum(p.numel() for p in small.parameters()) == plan.predicted_cost(graph)["params"]
