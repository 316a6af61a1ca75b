"""The user's own data: a ``.npz`` file, an image folder, or a Python callable.

``--dataset`` takes a registered name (``digits``), a path to a ``.npz`` file, a
directory of class sub-folders of PNG/JPEG images, or ``file.py:function`` /
``package.module:function`` returning either a dict of arrays or ``(train, test)`` torch
Datasets. The arrays of a ``.npz`` / dict are ``x_train, y_train, x_test, y_test``
(``x_val, y_val`` optional) unless the ``[data]`` config section names them otherwise.
Every source ends as the same :class:`~edgeprune.data.Dataset`: float32 inputs, a
validation split carved from the training data when none is given, the normalization
computed on the training split, and the preprocessing from the raw input (uint8 pixels
scaled by 1/255, image colour mode and resize) recorded for the device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError
from .imports import load_callable

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
ARRAY_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
RESAMPLE = "bilinear"  # how image folders are resized (recorded in the preprocessing)


def is_user_source(name: str) -> bool:
    return name.endswith(".npz") or ":" in name or Path(name).is_dir() or "/" in name


def load_user_dataset(name: str, *, seed: int = 0, input_shape=None, keys: dict | None = None, classes=None):
    """The dataset of a user source; ``keys`` maps x_train/... to the source's array names."""
    if ":" in name and not Path(name).exists():
        return from_callable(name, seed=seed, keys=keys, classes=classes)
    p = Path(name)
    if not p.exists():
        raise InputError(f"dataset {name} not found: give a registered name, a .npz file, an image folder or file.py:function")
    if p.is_dir():
        return from_image_folder(p, seed=seed, input_shape=input_shape, classes=classes)
    return from_npz(p, seed=seed, keys=keys, classes=classes)


def _as_images(x: np.ndarray, where: str) -> tuple[np.ndarray, float]:
    """float32 inputs with a channel axis, and the scale applied to the raw values (1/255 for uint8)."""
    x = np.asarray(x)
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    if x.dtype.kind not in "biuf":
        raise InputError(f"{where}: inputs must be numbers, got dtype {x.dtype}")
    x = x.astype(np.float32) * np.float32(scale) if scale != 1.0 else x.astype(np.float32)
    if x.ndim == 3:  # (N, H, W) -> (N, 1, H, W)
        x = x[:, None]
    if x.ndim < 2:
        raise InputError(f"{where}: inputs must have a batch dimension and at least one feature dimension, got {x.shape}")
    return x, scale


def rename_arrays(name: str, arrays: dict, keys: dict | None) -> dict:
    """``arrays`` under edgeprune's names (x_train, ...), read from the names ``keys`` gives."""
    keys = {k: (keys or {}).get(k) or k for k in ARRAY_KEYS}
    missing = [keys[k] for k in REQUIRED_KEYS if keys[k] not in arrays]
    if missing:
        renamed = any(keys[k] != k for k in ARRAY_KEYS)
        fix = ("fix the names in the [data] config section" if renamed else
               "save it with x_train, y_train, x_test, y_test (x_val, y_val optional), or name its arrays in the "
               "[data] config section (x_train = \"images\", ...)")
        raise InputError(f"{name}: missing array(s) {missing} (it has {sorted(arrays)}): {fix}")
    if (keys["x_val"] in arrays) != (keys["y_val"] in arrays):
        raise InputError(f"{name}: has only one of {keys['x_val']} and {keys['y_val']}: give both or neither")
    return {k: arrays[keys[k]] for k in ARRAY_KEYS if keys[k] in arrays}


def from_arrays(name: str, arrays: dict, *, seed: int = 0, source: str = "", classes=None, keys: dict | None = None,
                preprocessing: dict | None = None):
    """A Dataset from a dict of arrays (``keys`` renames them); validates lengths, shapes and dtypes."""
    from .dataset import Dataset, split

    arrays = rename_arrays(name, arrays, keys)
    xtr, s_tr = _as_images(arrays["x_train"], name)
    xte, s_te = _as_images(arrays["x_test"], name)
    ytr, yte = np.asarray(arrays["y_train"]), np.asarray(arrays["y_test"])
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise InputError(f"{name}: x and y lengths differ (train {len(xtr)} vs {len(ytr)}, test {len(xte)} vs {len(yte)})")
    if len(xtr) == 0 or len(xte) == 0:
        raise InputError(f"{name}: the training and test splits need at least one sample each")
    if xtr.shape[1:] != xte.shape[1:]:
        raise InputError(f"{name}: train inputs {xtr.shape[1:]} and test inputs {xte.shape[1:]} differ in shape")
    _check_values(name, {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte})
    scales = {s_tr, s_te}
    if "x_val" in arrays:
        xva, s_va = _as_images(arrays["x_val"], name)
        yva = np.asarray(arrays["y_val"])
        scales.add(s_va)
        _check_values(name, {"x_val": xva, "y_val": yva})
        if len(xva) != len(yva) or xva.shape[1:] != xtr.shape[1:]:
            raise InputError(f"{name}: validation arrays {xva.shape}/{yva.shape} do not match the training inputs {xtr.shape[1:]}")
    else:
        (xtr, ytr), (xva, yva), _ = split(xtr, ytr, (0.15, 0.0), seed)
        if len(xva) == 0 or len(xtr) == 0:
            raise InputError(f"{name}: {len(ytr) + len(yva)} training sample(s) are too few to carve a validation "
                             f"split (15%): give at least {MIN_TRAIN_FOR_SPLIT}, or give x_val/y_val")
    if len(scales) > 1:
        raise InputError(f"{name}: some input arrays are uint8 (scaled by 1/255) and others are not: "
                         "give every split in the same dtype")
    integer = np.issubdtype(ytr.dtype, np.integer)
    if integer:
        ytr, yva, yte = ytr.astype(np.int64), yva.astype(np.int64), yte.astype(np.int64)
        n_classes = int(max(ytr.max(), yte.max())) + 1
        if min(int(ytr.min()), int(yte.min())) < 0:
            raise InputError(f"{name}: class labels must be 0..N-1, found a negative label")
        classes = [str(c) for c in classes] if classes else [str(i) for i in range(n_classes)]
        if len(classes) < n_classes:
            raise InputError(f"{name}: labels go up to {n_classes - 1} but only {len(classes)} class names are given")
    else:
        classes = [str(c) for c in classes or []]
    bad = next((c for c in classes if not c.isprintable()), None)
    if bad is not None:
        raise InputError(f"{name}: class name {bad!r} contains a newline or control character: give one-line "
                         "class names (labels.txt holds one per line)")
    mean, std = float(xtr.mean()), float(xtr.std()) or 1.0
    prep = {"input_scale": s_tr, **(preprocessing or {})}
    return Dataset(name, xtr, ytr, xva, yva, xte, yte, classes, mean, std, source or name, preprocessing=prep)


MIN_TRAIN_FOR_SPLIT = 4  # round(4 * 0.15) = 1: the smallest training set a validation split can be carved from


def _check_values(name: str, arrays: dict) -> None:
    """Finite inputs and 1-D class labels, or a one-line error naming the array and the fix."""
    for k, a in arrays.items():
        if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
            i = int(np.argwhere(~np.isfinite(a.reshape(len(a), -1)))[0][0])
            raise InputError(f"{name}: {k} contains NaN or Inf (first in sample {i}): remove or fix those samples")
        if k.startswith("y_") and a.dtype.kind in "iu" and a.ndim != 1:
            raise InputError(f"{name}: {k} has shape {a.shape}; class labels must be 1-D (N,): pass y.reshape(-1)")


def from_npz(path: Path, *, seed: int = 0, keys: dict | None = None, classes=None):
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes): an interrupted save or download? save it again with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - zipfile, zlib, numpy: a truncated file raises any of them
        why = str(e).strip().splitlines()
        raise InputError(f"cannot read {path} as a .npz file ({type(e).__name__}: {why[0] if why else 'truncated?'}); "
                         "save it again with numpy.savez") from None
    class_key = (keys or {}).get("classes") or "classes"
    if classes is None and class_key in arrays:
        classes = [str(c) for c in arrays[class_key]]
    arrays.pop(class_key, None)
    return from_arrays(path.stem, arrays, seed=seed, source=f"user file {path.name}", classes=classes, keys=keys)


def _open_image(path: Path):
    """The decoded image at ``path`` (PIL), or a one-line error naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            return img
    except (OSError, ValueError, SyntaxError) as e:  # PIL: UnidentifiedImageError, truncated data, bad chunks
        raise InputError(f"cannot read image {path}: {e}; remove or replace the file") from None


def _image_files(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    files = []
    for i, c in enumerate(classes):
        found = [f for f in sorted((root / c).iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        if not found:
            raise InputError(f"class folder {root / c} has no PNG/JPEG images: add images or remove the folder")
        files += [(f, i) for f in found]
    return files


def from_image_folder(root: Path, *, seed: int = 0, input_shape=None, test_fraction: float = 0.2, classes=None):
    """Class-per-subfolder images (``root/<class>/*.png``); resized to ``input_shape`` (C, H, W) if given.

    Without ``input_shape`` the first image decides the size and the colour mode (grey if it
    is grey, else RGB); every image is converted to that mode and resized to that size with
    bilinear resampling, and these steps are recorded in the dataset's preprocessing.
    """
    from PIL import Image

    folders = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not any(f.suffix.lower() in IMAGE_SUFFIXES for d in folders for f in (root / d).iterdir()):
        raise InputError(f"image folder {root} has no images: expected {root}/<class>/*.png or *.jpg")
    if len(folders) < 2:
        raise InputError(f"image folder {root} has {len(folders)} class folder(s); classification needs at least 2")
    if input_shape is not None and (len(input_shape) != 3 or input_shape[0] not in (1, 3)):
        raise InputError(f"image folder {root}: input shape {'x'.join(map(str, input_shape))} must be 1xCxHxW "
                         "with C = 1 (grey) or 3 (RGB)")
    files = _image_files(root, folders)
    first = _open_image(files[0][0])
    channels = input_shape[0] if input_shape else (1 if first.mode in GREY_MODES else 3)
    size = (input_shape[2], input_shape[1]) if input_shape else first.size  # PIL sizes are (W, H)
    mode = "L" if channels == 1 else "RGB"
    xs = []
    for f, _ in files:
        img = _open_image(f).convert(mode)
        if img.size != size:
            img = img.resize(size, Image.Resampling.BILINEAR)
        a = np.asarray(img, dtype=np.uint8)
        xs.append(a[None] if channels == 1 else a.transpose(2, 0, 1))
    x = np.stack(xs)  # uint8: from_arrays scales by 1/255 and records it
    y = np.array([i for _, i in files], dtype=np.int64)
    from .dataset import split

    (xtr, ytr), _, (xte, yte) = split(x, y, (0.0, test_fraction), seed)
    if len(xtr) == 0 or len(xte) == 0:
        raise InputError(f"image folder {root} has only {len(files)} image(s): too few for a train and a test split")
    prep = {"color_mode": mode, "resize": [size[1], size[0]], "resample": RESAMPLE}
    return from_arrays(root.name, {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}, seed=seed,
                       source=f"image folder {root.name} ({len(files)} images)", classes=classes or folders,
                       preprocessing=prep)


def from_callable(spec: str, *, seed: int = 0, keys: dict | None = None, classes=None):
    fn = load_callable(spec, what="dataset")
    try:
        out = fn()
    except Exception as e:  # the user's code: show its error
        raise InputError(f"dataset function {spec} raised {type(e).__name__}: {e}") from None
    if isinstance(out, dict):
        class_key = (keys or {}).get("classes") or "classes"
        if classes is None and class_key in out:
            classes = [str(c) for c in out[class_key]]
        arrays = {k: v for k, v in out.items() if k != class_key}
        return from_arrays(spec, arrays, seed=seed, source=f"user function {spec}", classes=classes, keys=keys)
    if isinstance(out, (tuple, list)) and len(out) in (2, 3):
        arrays = {}
        for part, ds in zip(("train", "test") if len(out) == 2 else ("train", "val", "test"), out):
            x, y = dataset_to_arrays(ds, spec)
            arrays[f"x_{part}"], arrays[f"y_{part}"] = x, y
        return from_arrays(spec, arrays, seed=seed, source=f"user function {spec}", classes=classes)
    raise InputError(f"dataset function {spec} must return a dict of arrays or (train, test) torch Datasets, "
                     f"got {type(out).__name__}")


def dataset_to_arrays(ds, where: str):
    """(x, y) numpy arrays of a map-style dataset of ``(x, y)`` items (a torch Dataset)."""
    try:
        items = [ds[i] for i in range(len(ds))]
    except TypeError:
        raise InputError(f"{where}: the datasets must support len() and indexing, returning (x, y) pairs") from None
    if not items:
        raise InputError(f"{where}: a dataset is empty")
    try:
        xs = np.stack([np.asarray(x) for x, _ in items])
        ys = np.asarray([np.asarray(y) for _, y in items])
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: dataset items must be (x, y) pairs of equal-shape arrays/tensors ({e})") from None
    return xs, ys
