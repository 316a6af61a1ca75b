"""The dataset container every data source returns (built-in registry and user data) and the deterministic split.

In a module of its own so that user data sources (:mod:`edgeprune.userdata`) and the registry
(:mod:`edgeprune.data`) can both use it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    mean: float = 0.0  # normalisation the model expects: (x - mean) / std
    std: float = 1.0
    source: str = ""
    meta: dict = field(default_factory=dict)
    # raw -> [0, 1] steps before the normalisation: input_scale (1/255 for uint8 pixels), and for
    # image folders color_mode ("L" grey / "RGB"), resize [H, W] and resample (see preprocessing_spec)
    preprocessing: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "input_shape": list(self.input_shape),
            "classes": self.classes,
            "n_train": int(len(self.x_train)),
            "n_val": int(len(self.x_val)),
            "n_test": int(len(self.x_test)),
            "normalization": {"mean": self.mean, "std": self.std},
            "preprocessing": self.preprocessing_spec(),
            **self.meta,
        }

    def preprocessing_spec(self) -> dict:
        """Everything a device must do to a raw input before the model: the same steps as training.

        ``{"input_scale", "mean", "std", "color_mode", "resize", "resample", "formula"}``:
        convert an image to ``color_mode`` and resize it to ``resize`` = [H, W] with
        ``resample`` (image folders; None otherwise), then ``x = (raw * input_scale - mean) / std``
        on the channel-first array (``raw`` as stored: 0-255 for uint8 pixels).
        """
        p = self.preprocessing
        return {
            "input_scale": float(p.get("input_scale", 1.0)),
            "mean": self.mean,
            "std": self.std,
            "color_mode": p.get("color_mode"),
            "resize": p.get("resize"),
            "resample": p.get("resample"),
            "formula": "x = (raw * input_scale - mean) / std",
        }


def split(x: np.ndarray, y: np.ndarray, fractions: tuple[float, float], seed: int):
    """Deterministic stratified-enough shuffle split into (train, val, test) by fractions of val, test."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    n_val, n_test = int(round(len(x) * fractions[0])), int(round(len(x) * fractions[1]))
    te, va, tr = idx[:n_test], idx[n_test : n_test + n_val], idx[n_test + n_val :]
    return (x[tr], y[tr]), (x[va], y[va]), (x[te], y[te])
