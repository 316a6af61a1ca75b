"""The toy method of docs/methods/README.md is real code: registered from the doc, it keeps the method contract,
is listed with its options, and draws its declared curves in the report."""

import re
from pathlib import Path

import pytest
import torch

from edgeprune.data import load_dataset
from edgeprune.errors import ConfigError
from edgeprune.methods import METHODS, get_method, list_methods, method_info
from edgeprune.models import build_model
from edgeprune.report.html import _plot_method
from edgeprune.train import train

from .method_contract import check_method

DOC = Path(__file__).resolve().parents[1] / "docs" / "methods" / "README.md"


@pytest.fixture(scope="module")
def toy():
    text = DOC.read_text()
    code = re.search(r"<!-- toy-method -->\s*```python\n(.*?)```", text, re.S).group(1)
    assert "toy-shrink" not in METHODS
    exec(compile(code, str(DOC), "exec"), {"__name__": "toy_method_from_docs"})  # the repository's own doc
    yield METHODS["toy-shrink"]
    METHODS.pop("toy-shrink")  # leave the registry as the other tests expect it


def test_toy_method_from_the_docs_keeps_the_contract(toy):
    assert "toy-shrink" in list_methods()
    info = method_info("toy-shrink")
    assert info["trains"] and [o["name"] for o in info["options"]] == ["epochs", "strength"]
    with pytest.raises(ConfigError, match=r"'toy-shrink' option strength=-1: expected a value >= 0"):
        get_method("toy-shrink", {"strength": -1})
    ds = load_dataset("digits", limit=400)
    data = {k: ds.normalize(getattr(ds, k)) if k.startswith("x") else getattr(ds, k)
            for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, widths=(16, 32), hidden=32)
    train(model, data["x_train"], data["y_train"], epochs=1)
    got = check_method("toy-shrink", model, data)
    assert 0.3 <= got["kept"] <= 0.525

    # the report draws the toy's declared curves, with nothing in the report knowing its name
    res = get_method("toy-shrink", {"epochs": 2}).fit(model, _ctx(model, data))
    svg = _plot_method({"method": {"method": "toy-shrink", "history": res.history}, "model": {"group_labels": {}}})
    assert svg and "L1 norm of the weights" in svg and "task loss" in svg
    assert len(res.history["weight_l1"]) == 2


def _ctx(model, data):
    from edgeprune.methods import FitContext
    from edgeprune.surgery import analyze

    ex = torch.zeros(1, 1, 8, 8)
    return FitContext(data["x_train"], data["y_train"], data["x_val"], data["y_val"], ex, analyze(model, ex),
                      "classification", 0.5, 4, 0, {"epochs": 1, "batch_size": 64, "lr": 0.01, "weight_decay": 5e-4},
                      log=lambda *a: None)
