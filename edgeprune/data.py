"""Dataset registry: real datasets as float32 numpy arrays, split deterministically.

A loader returns a :class:`Dataset` with train/val/test arrays (inputs N x C x H x W in
[0, 1] before normalisation), class names, and the whole preprocessing from the raw input
(pixels as stored) to what the model sees: ``x = (raw * input_scale - mean) / std``, after
the colour conversion and resize of image folders (:meth:`Dataset.preprocessing_spec`,
recorded in train.json and the device bundle).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Callable

import numpy as np

from .dataset import Dataset, split  # noqa: F401  (re-exported: the data module's public names)
from .errors import ConfigError, InputError

DATASETS: dict[str, Callable[..., "Dataset"]] = {}

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def register_dataset(name: str):
    def deco(fn):
        DATASETS[name] = fn
        return fn

    return deco


def list_datasets() -> list[str]:
    return sorted(DATASETS)


def load_dataset(name: str, *, seed: int = 0, data_dir: str | Path | None = None, limit: int | None = None,
                 input_shape=None, keys: dict | None = None, classes: list | None = None) -> Dataset:
    """Load a registered dataset or a user source (.npz, image folder, file.py:function).

    ``limit`` caps the training set (quick runs, tests); ``input_shape`` (C, H, W) resizes
    image folders; ``keys`` names the arrays of a .npz / dict source (the ``[data]`` config
    section: ``{"x_train": "images", ...}``) and ``classes`` its class names.
    """
    from .userdata import is_user_source, load_user_dataset

    if name in DATASETS:
        ds = DATASETS[name](seed=seed, data_dir=data_dir)
    elif is_user_source(name):
        ds = load_user_dataset(name, seed=seed, input_shape=input_shape, keys=keys, classes=classes)
    else:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {list_datasets()}, a .npz file, "
                          "an image folder or file.py:function")
    if limit:
        ds.x_train, ds.y_train = ds.x_train[:limit], ds.y_train[:limit]
    return ds


@register_dataset("digits")
def digits(seed: int = 0, data_dir=None) -> Dataset:
    """scikit-learn's 1,797 real 8x8 handwritten digits (UCI), bundled with scikit-learn."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    (xtr, ytr), (xva, yva), (xte, yte) = split(x, y, (0.15, 0.2), seed)
    mean, std = float(xtr.mean()), float(xtr.std())
    return Dataset("digits", xtr, ytr, xva, yva, xte, yte, [str(i) for i in range(10)], mean, std,
                   "scikit-learn load_digits (UCI optical recognition of handwritten digits)",
                   preprocessing={"input_scale": 1.0 / 16.0})  # raw pixels are counts 0..16


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise InputError(f"{path} is not an IDX file of unsigned bytes; re-install the dataset")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@register_dataset("fashion-mnist")
def fashion_mnist(seed: int = 0, data_dir=None) -> Dataset:
    """Zalando's Fashion-MNIST (60k train + 10k test, 28x28 grey), read from gzipped IDX files."""
    root = Path(data_dir) if data_dir else FASHION_MNIST_DIR
    files = {
        "xtr": "train-images-idx3-ubyte.gz",
        "ytr": "train-labels-idx1-ubyte.gz",
        "xte": "t10k-images-idx3-ubyte.gz",
        "yte": "t10k-labels-idx1-ubyte.gz",
    }
    missing = [f for f in files.values() if not (root / f).is_file()]
    if missing:
        raise InputError(
            f"Fashion-MNIST not found in {root} (missing {missing[0]}): "
            "install it with `apt-get install dataset-fashion-mnist` or pass --data-dir DIR"
        )
    arr = {k: _read_idx(root / f) for k, f in files.items()}
    x = arr["xtr"].astype(np.float32)[:, None] / 255.0
    y = arr["ytr"].astype(np.int64)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    n_val = 5000
    va, tr = idx[:n_val], idx[n_val:]
    xte = arr["xte"].astype(np.float32)[:, None] / 255.0
    xtr = x[tr]
    return Dataset("fashion-mnist", xtr, y[tr], x[va], y[va], xte, arr["yte"].astype(np.int64), FASHION_CLASSES,
                   float(xtr.mean()), float(xtr.std()), "Fashion-MNIST (Xiao et al. 2017), MIT licence",
                   preprocessing={"input_scale": 1.0 / 255.0, "color_mode": "L"})
