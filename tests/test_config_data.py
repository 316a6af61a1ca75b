"""Config validation and the dataset registry."""

import numpy as np
import pytest

from edgeprune import config
from edgeprune.data import list_datasets, load_dataset
from edgeprune.errors import ConfigError, InputError


def test_defaults_resolve_and_cli_overrides_file(tmp_path):
    f = tmp_path / "edgeprune.toml"
    f.write_text('model = "resnet"\n[train]\nepochs = 3\n[method]\nflops_keep = 0.25\n')
    cfg = config.resolve(f, {"train": {"epochs": 5}})
    assert cfg["model"] == "resnet" and cfg["train"]["epochs"] == 5 and cfg["method"]["flops_keep"] == 0.25
    assert cfg["train"]["batch_size"] == config.SCHEMA["train"]["batch_size"][1]


@pytest.mark.parametrize("text,match", [
    ("epoch = 3\n", "unknown key 'epoch'"),
    ("[train]\nepochz = 3\n", "unknown key 'train.epochz'"),
    ("[train]\nepochs = 'many'\n", "'train.epochs' must be int"),
    ("model = \n", "malformed TOML"),
    ("[method]\nflops_keep = 1.5\n", "flops_keep"),
])
def test_bad_config_names_the_problem(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        config.resolve(f)


def test_reference_table_lists_every_key():
    ref = config.reference_markdown()
    for section, keys in config.SCHEMA.items():
        for key in keys:
            assert (f"`{section}.{key}`" if section else f"`{key}`") in ref


def test_digits_split_is_deterministic_and_disjoint():
    a, b = load_dataset("digits", seed=3), load_dataset("digits", seed=3)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    c = load_dataset("digits", seed=4)
    assert not np.array_equal(a.x_test, c.x_test)
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == 1797
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0


def test_fashion_mnist_missing_dir_says_how_to_install(tmp_path):
    with pytest.raises(InputError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_fashion_mnist_reads_idx_files(tmp_path):
    """A real IDX writer/reader round trip (the format of the Debian package's files)."""
    import gzip
    import struct

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(6000, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=6000, dtype=np.uint8)
    for prefix, n in (("train", 6000), ("t10k", 1000)):
        with gzip.open(tmp_path / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">HBBIII", 0, 8, 3, n, 28, 28) + imgs[:n].tobytes())
        with gzip.open(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">HBBI", 0, 8, 1, n) + labels[:n].tobytes())
    ds = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert ds.input_shape == (1, 28, 28) and len(ds.x_test) == 1000 and len(ds.x_val) == 5000
    np.testing.assert_allclose(ds.x_test[0, 0], imgs[0] / 255.0, rtol=1e-6)


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_dataset("cifar10")
    assert "digits" in list_datasets()
