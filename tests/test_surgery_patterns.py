"""Patterns real model zoos use around prunable layers (models in surgery_pattern_models.py), each compacted
and checked against an independent masked reference (benchmarks/zoo/reference.py: no surgery code inside)
on real digits inputs: per-channel PReLU, a layer-scale parameter, channels-last flattens (permute and
transpose), a hard-coded flatten width rewritten on a torch.fx trace, two outputs, (k, 1) kernels, BN after
ReLU, MaxPool(ceil_mode), nested Sequentials, F.relu / torch.cat, softmax."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.fx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "zoo"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference import ReferenceError, check_against_reference  # noqa: E402
from surgery_pattern_models import PATTERN_MODELS, randomize  # noqa: E402

from edgeprune.errors import VerificationError  # noqa: E402
from edgeprune.surgery import analyze, compact, compact_and_verify, plan_from_scores  # noqa: E402

REL_TOL = 1e-5


@pytest.fixture(scope="module")
def digits():
    from edgeprune.data import load_dataset

    ds = load_dataset("digits")
    return torch.from_numpy(ds.normalize(ds.x_test[:48]))


def _plan(graph, seed=0, keep=0.7):
    rng = np.random.default_rng(seed)
    scores = {g: rng.random(v.size) for g, v in graph.groups.items()}
    return plan_from_scores(graph, scores, {g: max(1, int(v.size * keep)) for g, v in graph.groups.items()})


def _setup(name, digits, seed=0):
    torch.manual_seed(seed)
    model = randomize(PATTERN_MODELS[name](), seed)
    ex = digits[:1]
    graph = analyze(model, ex)
    return model, ex, graph, _plan(graph, seed)


@pytest.mark.parametrize("name", list(PATTERN_MODELS))
def test_pattern_compacts_and_equals_the_independent_reference(name, digits):
    model, ex, graph, plan = _setup(name, digits)
    assert plan.keep, "the plan removes channels"
    small, report = compact_and_verify(model, plan, ex, digits, graph)
    assert report["rel_diff"] <= REL_TOL
    assert report["params"] < sum(p.numel() for p in model.parameters())
    chk = check_against_reference(model, lambda m, e: compact(m, plan, e, graph), ex, digits, small)
    assert chk["rel_diff"] <= REL_TOL, chk
    assert chk["removed_params"] > 0


def test_per_channel_parameters_are_sliced_with_their_group(digits):
    model, ex, graph, plan = _setup("prelu", digits)
    small = compact(model, plan, ex, graph)
    assert small.a1.weight.numel() == small.c1.out_channels < 12
    assert small.a2.weight.numel() == small.c2.out_channels < 16
    model, ex, graph, plan = _setup("layer_scale", digits)
    small = compact(model, plan, ex, graph)
    assert small.block.gamma.shape == (small.stem.out_channels, 1, 1) and small.stem.out_channels < 12
    assert graph.layers["block.gamma"].kind == "channel"  # modelled: the predicted count was exact above


def test_channels_last_flatten_keeps_every_c_th_column_and_the_reference_catches_the_channel_first_cut(digits):
    model, ex, graph, plan = _setup("permute_flatten", digits)
    assert list(graph.remaps) == ["fc"]
    kept = plan.keep["conv2.0"]
    small = compact(model, plan, ex, graph)
    cols = [hw * 10 + c for hw in range(16) for c in kept]  # (h, w, c) order, channel c every 10th column
    assert torch.equal(small.fc.weight, model.fc.weight[:, cols])
    # without the remap (Torch-Pruning's channel-first cut) both checks fail: they can fail
    graph.remaps = {}
    wrong = compact(model, plan, ex, graph)
    chk = check_against_reference(model, lambda m, e: compact(m, plan, e, graph), ex, digits, wrong)
    assert chk["rel_diff"] > 1e-3
    with pytest.raises(VerificationError):
        compact_and_verify(model, plan, ex, digits, graph)


def test_hard_coded_flatten_width_is_rewritten_on_the_fx_graph(digits):
    model, ex, graph, plan = _setup("hard_coded_view", digits)
    assert [(r.op, r.args) for r in graph.rewrites] == [("view", (-1, 576))]
    assert graph.rewrites[0].line.startswith("surgery_pattern_models.py:")
    small = compact(model, plan, ex, graph)
    assert isinstance(small, torch.fx.GraphModule)
    assert "flatten" in small.code and "576" not in small.code
    assert small.fc.in_features == small.get_submodule("conv.0").out_channels * 16 < 576


def test_two_outputs_are_verified_one_by_one(digits):
    model, ex, graph, plan = _setup("two_outputs", digits)
    small, report = compact_and_verify(model, plan, ex, digits, graph)
    assert report["n_outputs"] == 2
    a, b = small(digits)
    assert a.shape == (48, 10) and b.shape == (48, 5)
    # a wrong second output is caught even though the first is right
    with torch.no_grad():
        small.reg.bias.add_(1.0)
    from edgeprune.surgery import masked, verify

    with pytest.raises(VerificationError, match="output 1 of 2"):
        verify(masked(model, plan, ex, graph), small, digits)


def test_reference_refuses_a_compaction_that_mixes_entries(digits):
    model, ex, graph, plan = _setup("prelu", digits)

    def shuffled(m, e):
        s = compact(m, plan, e, graph)
        with torch.no_grad():
            s.a1.weight.copy_(s.a1.weight.flip(0))
        return s

    with pytest.raises(ReferenceError, match="a1.weight"):
        check_against_reference(model, shuffled, ex, digits)


def test_layer_norm_over_pruned_channels_normalizes_over_the_kept_ones(digits):
    """The reference is defined with statistics over the kept channels; zero-masking alone is not removal there."""
    model, ex, graph, plan = _setup("convnext", digits)
    assert graph.layers["block.norm"].kind == "channel" and "stem.1" in graph.layers
    small = compact(model, plan, ex, graph)
    assert small.block.norm.normalized_shape[0] == small.stem[0].out_channels < 12
    from reference import kept_indices, masked_reference, tag_model, compare

    kept = kept_indices(model, small, compact(tag_model(model), plan, ex.double(), graph))
    assert compare(masked_reference(model, kept), small, digits) <= REL_TOL
    import reference

    plain = reference.KeptLayerNorm.forward
    try:  # a LayerNorm over all channels (removed ones zero) is a different model
        reference.KeptLayerNorm.forward = lambda self, x: torch.nn.functional.layer_norm(
            x, self.ln.normalized_shape, self.ln.weight, self.ln.bias, self.ln.eps)
        assert compare(masked_reference(model, kept), small, digits) > 1e-3
    finally:
        reference.KeptLayerNorm.forward = plain


def test_attention_keeps_the_residual_stream_and_prunes_the_mlp(digits):
    model, ex, graph, plan = _setup("attention", digits)
    assert list(graph.groups) == ["mlp.0"]
    assert any("attn (MultiheadAttention), a layer edgeprune does not cut" in why for why in graph.frozen.values())
    small = compact(model, plan, ex, graph)
    assert small.mlp[0].out_features == small.mlp[2].in_features == len(plan.keep["mlp.0"]) < 32
    assert small.pos.shape == model.pos.shape  # the residual stream (and its embeddings) stays whole


def test_channel_split_and_shuffle_keep_the_trunk_and_prune_inside_the_branches(digits):
    model, ex, graph, plan = _setup("shuffle", digits)
    assert set(graph.groups) == {"b1.branch.3", "b2.branch.3"}  # the branch-internal widths (1x1 -> depthwise)
    assert any("chunk(2, dim=1)" in why or "regroups the channel dimension" in why for why in graph.frozen.values())


def test_head_split_attention_keeps_qkv_whole_and_prunes_the_mlp(digits):
    """timm's attention: the qkv channels go into heads (reshape + permute), the tokens' channels are moved by a
    transpose: those groups stay whole (named), the MLP's hidden channels are cut."""
    model, ex, graph, plan = _setup("head_split", digits)
    assert list(graph.groups) == ["mlp.0"]
    assert "permute(2, 0, 3, 1, 4) in module attn (HeadSplitAttention)" in graph.frozen["attn.qkv"]
    assert "transpose(1, 2)" in graph.frozen["patch"]
    small = compact(model, plan, ex, graph)
    assert small.mlp[0].out_features == len(plan.keep["mlp.0"]) < 32 and small.attn.qkv.out_features == 48


def test_ghost_slice_and_channel_pad_keep_their_groups_whole_and_the_rest_compacts(digits):
    """GhostNet's cat + slice with the residual added in place into the slice's view, and ReXNet's residual onto
    the first channels: Torch-Pruning maps no index through them (it mapped one ghost channel onto two, and
    its traversal through ReXNet's slices ran for over 900 s); the groups through them stay whole."""
    model, ex, graph, plan = _setup("ghost_and_pad", digits)
    assert "copyslices" in graph.frozen["stem.0"] and "writes in place into a view" in graph.frozen["stem.0"]
    assert "indexes the channel dimension" in graph.frozen["pad.body.1"]
    assert "pad.body.0.0" in graph.groups and "head.0.0" in graph.groups
