"""The per-layer INT8 benchmark (benchmarks/export/int8_layers.py) cuts a model into exactly its kernels."""

import sys
from pathlib import Path

import pytest
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "export"))

import int8_layers  # noqa: E402

from edgeprune.models import Residual, build_model  # noqa: E402


@pytest.mark.parametrize("name", ["cnn", "resnet", "mobilenetv2", "concat"])
def test_layer_rows_cover_every_conv_linear_and_residual_once(name):
    shape = (1, 28, 28)
    rows = int8_layers.layer_rows(name, shape)
    model = build_model(name, shape, 10)
    count = {k: sum(r["count"] for r in rows if r["kind"] == k) for k in ("conv", "linear", "add", "builtin")}
    assert count["conv"] == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert count["linear"] == sum(isinstance(m, nn.Linear) for m in model.modules())
    assert count["add"] == sum(isinstance(m, Residual) for m in model.modules())
    assert count["builtin"] == 1
    for r in rows:
        if r["kind"] == "conv":  # the cut-out kernel has the layer's own input channels
            assert r["shape"][0] == r["spec"]["cin"]
            if r["layer_kind"].startswith("depthwise"):
                assert r["spec"]["groups"] == r["spec"]["cin"] == r["spec"]["cout"]


def test_activation_is_read_from_the_fused_block():
    rows = {r["name"]: r for r in int8_layers.layer_rows("mobilenetv2", (1, 28, 28))}
    acts = {r["spec"]["act"] for r in rows.values() if r["layer_kind"] == "pointwise 1x1 (linear)"}
    assert acts == {"none"}  # the linear bottleneck projections
    assert {r["spec"]["act"] for r in rows.values() if r["layer_kind"].startswith("depthwise")} == {"relu6"}
