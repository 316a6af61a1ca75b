"""The user's own data: a ``.npz`` file, an image folder, or a Python callable.

``--dataset`` takes a registered name (``digits``), a path to a ``.npz`` file, a
directory of class sub-folders of PNG/JPEG images, or ``file.py:function`` /
``package.module:function`` returning either a dict of arrays or ``(train, test)`` torch
Datasets. Every source ends as the same :class:`~edgeprune.data.Dataset`: float32 inputs,
a validation split carved from the training data when none is given, and the
normalization computed on the training split (recorded in the exported metadata).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError
from .imports import load_callable

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


def is_user_source(name: str) -> bool:
    return name.endswith(".npz") or ":" in name or Path(name).is_dir() or "/" in name


def load_user_dataset(name: str, *, seed: int = 0, input_shape=None):
    if ":" in name and not Path(name).exists():
        return from_callable(name, seed=seed)
    p = Path(name)
    if not p.exists():
        raise InputError(f"dataset {name} not found: give a registered name, a .npz file, an image folder or file.py:function")
    if p.is_dir():
        return from_image_folder(p, seed=seed, input_shape=input_shape)
    return from_npz(p, seed=seed)


def _as_images(x: np.ndarray, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if x.ndim == 3:  # (N, H, W) -> (N, 1, H, W)
        x = x[:, None]
    if x.ndim < 2:
        raise InputError(f"{where}: inputs must have a batch dimension and at least one feature dimension, got {x.shape}")
    return x


def from_arrays(name: str, arrays: dict, *, seed: int = 0, source: str = "", classes=None):
    from .data import Dataset, split

    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise InputError(f"{name}: missing array(s) {missing}; a dataset needs x_train, y_train, x_test, y_test "
                         "(x_val, y_val optional)")
    xtr, ytr = _as_images(arrays["x_train"], name), np.asarray(arrays["y_train"])
    xte, yte = _as_images(arrays["x_test"], name), np.asarray(arrays["y_test"])
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise InputError(f"{name}: x and y lengths differ (train {len(xtr)} vs {len(ytr)}, test {len(xte)} vs {len(yte)})")
    if xtr.shape[1:] != xte.shape[1:]:
        raise InputError(f"{name}: train inputs {xtr.shape[1:]} and test inputs {xte.shape[1:]} differ in shape")
    if "x_val" in arrays:
        xva, yva = _as_images(arrays["x_val"], name), np.asarray(arrays["y_val"])
    else:
        (xtr, ytr), (xva, yva), _ = split(xtr, ytr, (0.15, 0.0), seed)
    integer = np.issubdtype(ytr.dtype, np.integer)
    if integer:
        ytr, yva, yte = ytr.astype(np.int64), yva.astype(np.int64), yte.astype(np.int64)
        n_classes = int(max(ytr.max(), yte.max())) + 1
        classes = list(classes) if classes is not None else [str(i) for i in range(n_classes)]
    else:
        classes = list(classes or [])
    mean, std = float(xtr.mean()), float(xtr.std()) or 1.0
    return Dataset(name, xtr, ytr, xva, yva, xte, yte, classes, mean, std, source or name)


def from_npz(path: Path, *, seed: int = 0):
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path} as a .npz file ({e}); save it with numpy.savez") from None
    classes = [str(c) for c in arrays.pop("classes")] if "classes" in arrays else None
    return from_arrays(path.stem, arrays, seed=seed, source=f"user file {path.name}", classes=classes)


def from_image_folder(root: Path, *, seed: int = 0, input_shape=None, test_fraction: float = 0.2):
    """Class-per-subfolder images (``root/<class>/*.png``); resized to ``input_shape`` (C, H, W) if given."""
    from PIL import Image

    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"image folder {root} has no images: expected {root}/<class>/*.png or *.jpg")
    if len(classes) < 2:
        raise InputError(f"image folder {root} has {len(classes)} class folder(s); classification needs at least 2")
    first = Image.open(files[0][0])
    channels = input_shape[0] if input_shape else (1 if first.mode in ("L", "1", "I;16") else 3)
    size = (input_shape[2], input_shape[1]) if input_shape else first.size
    mode = "L" if channels == 1 else "RGB"
    xs = []
    for f, _ in files:
        try:
            img = Image.open(f).convert(mode).resize(size)
        except OSError as e:
            raise InputError(f"cannot read image {f}: {e}") from None
        a = np.asarray(img, dtype=np.float32) / 255.0
        xs.append(a[None] if channels == 1 else a.transpose(2, 0, 1))
    x = np.stack(xs)
    y = np.array([i for _, i in files], dtype=np.int64)
    from .data import split

    (xtr, ytr), _, (xte, yte) = split(x, y, (0.0, test_fraction), seed)
    return from_arrays(root.name, {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}, seed=seed,
                       source=f"image folder {root.name} ({len(files)} images)", classes=classes)


def from_callable(spec: str, *, seed: int = 0):
    fn = load_callable(spec, what="dataset")
    try:
        out = fn()
    except Exception as e:  # the user's code: show its error
        raise InputError(f"dataset function {spec} raised {type(e).__name__}: {e}") from None
    if isinstance(out, dict):
        return from_arrays(spec, out, seed=seed, source=f"user function {spec}")
    if isinstance(out, (tuple, list)) and len(out) in (2, 3):
        arrays = {}
        for part, ds in zip(("train", "test") if len(out) == 2 else ("train", "val", "test"), out):
            x, y = _dataset_to_arrays(ds, spec)
            arrays[f"x_{part}"], arrays[f"y_{part}"] = x, y
        return from_arrays(spec, arrays, seed=seed, source=f"user function {spec}")
    raise InputError(f"dataset function {spec} must return a dict of arrays or (train, test) torch Datasets, "
                     f"got {type(out).__name__}")


def _dataset_to_arrays(ds, spec: str):
    try:
        items = [ds[i] for i in range(len(ds))]
    except TypeError:
        raise InputError(f"dataset function {spec}: its datasets must support len() and indexing") from None
    xs = np.stack([np.asarray(x, dtype=np.float32) for x, _ in items])
    ys = np.asarray([np.asarray(y) for _, y in items])
    return xs, ys
