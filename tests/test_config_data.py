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


def test_readme_config_reference_is_the_generated_one():
    """The README's config table is config.reference_markdown() verbatim: it cannot drift from the schema."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert config.reference_markdown().strip() in readme


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


@pytest.mark.parametrize("file_text,over,epochs", [
    ("", {"weights": "net.pt"}, 0),  # pretrained: the given model is the dense model
    ("", {"weights": "net.pt", "train": {"epochs": 3}}, 3),  # explicit on the command line
    ("[train]\nepochs = 5\n", {"weights": "net.pt"}, 5),  # explicit in the file
    ('weights = "net.pt"\n', {}, 0),
    ("", {}, 12),  # no weights: the schema default
])
def test_epochs_default_to_zero_with_weights(tmp_path, file_text, over, epochs):
    f = tmp_path / "c.toml"
    f.write_text(file_text)
    assert config.resolve(f, over)["train"]["epochs"] == epochs


def test_data_section_keys_are_checked(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[data]\nx_train = "images"\nx_tarin = "oops"\n')
    with pytest.raises(ConfigError, match="unknown key 'data.x_tarin'"):
        config.resolve(f)
    f.write_text('[data]\nx_train = "x"\ny_train = "x"\n')
    with pytest.raises(ConfigError, match="distinct"):
        config.resolve(f)
    f.write_text('[data]\nx_train = "images"\nclasses = ["cat", "dog"]\n')
    cfg = config.resolve(f)
    assert cfg["data"]["x_train"] == "images" and cfg["data"]["x_test"] == "x_test" and cfg["data"]["classes"] == ["cat", "dog"]


def test_data_keys_rename_npz_arrays(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", a=rng.random((30, 1, 4, 4)), b=np.arange(30) % 2, c=rng.random((10, 1, 4, 4)),
             d=np.arange(10) % 2, names=np.array(["even", "odd"]))
    ds = load_dataset(str(tmp_path / "d.npz"), keys={"x_train": "a", "y_train": "b", "x_test": "c", "y_test": "d",
                                                     "classes": "names"})
    assert ds.classes == ["even", "odd"] and len(ds.x_test) == 10 and ds.input_shape == (1, 4, 4)
    # float inputs are used as they are: no scaling recorded
    assert ds.preprocessing_spec()["input_scale"] == 1.0
    with pytest.raises(InputError, match="only one of"):
        np.savez(tmp_path / "e.npz", x_train=np.zeros((4, 2)), y_train=np.zeros(4, int), x_test=np.zeros((2, 2)),
                 y_test=np.zeros(2, int), x_val=np.zeros((1, 2)))
        load_dataset(str(tmp_path / "e.npz"))


def test_registered_datasets_record_their_raw_scale():
    """digits stores pixel counts 0..16: the recorded input_scale maps them to the arrays exactly."""
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    prep = ds.preprocessing_spec()
    assert prep["input_scale"] == 1 / 16 and prep["formula"] == "x = (raw * input_scale - mean) / std"
    raw = load_digits().images.astype(np.float32)
    assert {round(float(v), 6) for v in np.unique(raw * prep["input_scale"])} == \
        {round(float(v), 6) for v in np.unique(np.concatenate([ds.x_train, ds.x_val, ds.x_test]))}
