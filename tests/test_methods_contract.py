"""Every registered pruning method keeps the method contract (tests/method_contract.py).

Parametrized over ``list_methods()``: a method registered later (Torch-Pruning peers, soft coefficients, ...)
is picked up automatically and runs with its own ``quick_options()``; nothing here names a method.
"""

import time

import pytest
import torch

from edgeprune.data import load_dataset
from edgeprune.methods import list_methods
from edgeprune.models import build_model
from edgeprune.train import train

from .method_contract import BAND, FLOPS_KEEP, check_method


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits", limit=600)
    return {k: ds.normalize(getattr(ds, k)) if k.startswith("x") else getattr(ds, k)
            for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}


@pytest.fixture(scope="module")
def dense_cnn(digits):
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, widths=(16, 32), hidden=32)
    train(model, digits["x_train"], digits["y_train"], epochs=2)
    return model


@pytest.mark.parametrize("method", list_methods())
def test_method_contract(method, digits, dense_cnn):
    t0 = time.perf_counter()
    got = check_method(method, dense_cnn, digits)
    assert BAND[0] * FLOPS_KEEP <= got["kept"] <= BAND[1] * FLOPS_KEEP
    assert time.perf_counter() - t0 < 60, "quick_options() should make the contract run in seconds"
