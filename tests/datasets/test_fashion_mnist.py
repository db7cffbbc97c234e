import gzip

import keras
import numpy as np
import pytest

from keras_transfer.datasets import FASHION_MNIST_CLASSES, fashion_mnist, load_fashion_mnist

requires_debian_files = pytest.mark.skipif(
    not all(
        (fashion_mnist._DEBIAN_DIR / f"{split}-{kind}-ubyte.gz").is_file()
        for split in ("train", "t10k")
        for kind in ("images-idx3", "labels-idx1")
    ),
    reason="Fashion-MNIST is read offline from the Debian/Ubuntu package: "
    "apt-get install dataset-fashion-mnist",
)


@pytest.fixture(scope="module")
def official():
    return load_fashion_mnist()


@requires_debian_files
def test_official_split_shapes_dtypes_and_counts(official):
    (x_train, y_train), (x_test, y_test) = official
    assert x_train.shape == (60000, 28, 28, 1)
    assert x_test.shape == (10000, 28, 28, 1)
    assert y_train.shape == (60000,)
    assert y_test.shape == (10000,)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int32
    # Balanced: 6,000 and 1,000 images of each class.
    np.testing.assert_array_equal(np.bincount(y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)


@requires_debian_files
def test_pixels_are_scaled_to_unit_range(official):
    (x_train, _), (x_test, _) = official
    for images in (x_train, x_test):
        assert images.min() == 0.0
        assert images.max() == 1.0
    # The published per-pixel statistics of the training set.
    assert abs(float(x_train.mean()) - 0.2860) < 1e-4
    assert abs(float(x_train.std()) - 0.3530) < 1e-4


@requires_debian_files
def test_official_split_keeps_the_files_order(official):
    (x_train, y_train), (x_test, y_test) = official
    np.testing.assert_array_equal(y_train[:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
    np.testing.assert_array_equal(y_test[:5], [9, 2, 1, 1, 6])
    assert FASHION_MNIST_CLASSES[y_train[0]] == "Ankle boot"
    # Sums of the raw 0-255 pixels of the first images.
    assert round(float(x_train[0].sum()) * 255) == 76247
    assert round(float(x_test[0].sum()) * 255) == 33456


@requires_debian_files
def test_test_fraction_pools_and_resplits(official):
    (_, y_official), _ = official
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(test_fraction=0.2, seed=3)
    assert x_train.shape == (56000, 28, 28, 1) and x_test.shape == (14000, 28, 28, 1)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(y_test), [1400] * 10)
    assert not np.array_equal(y_train[:1000], y_official[:1000])


def test_class_names():
    assert len(FASHION_MNIST_CLASSES) == 10
    assert FASHION_MNIST_CLASSES[0] == "T-shirt/top"
    assert FASHION_MNIST_CLASSES[9] == "Ankle boot"


def _small_dataset(rng):
    """A stand-in for the 70,000 images: 100 + 50 random ones, 10 of each class."""
    return (
        (rng.integers(0, 256, (100, 28, 28), dtype="uint8"), np.arange(100, dtype="uint8") % 10),
        (rng.integers(0, 256, (50, 28, 28), dtype="uint8"), np.arange(50, dtype="uint8") % 10),
    )


def test_resplit_is_deterministic(monkeypatch):
    data = _small_dataset(np.random.default_rng(0))
    monkeypatch.setattr(fashion_mnist, "_load_uint8", lambda: data)
    first = load_fashion_mnist(test_fraction=0.2)
    again = load_fashion_mnist(test_fraction=0.2)
    other_seed = load_fashion_mnist(test_fraction=0.2, seed=1)
    for (x_a, y_a), (x_b, y_b) in zip(first, again):
        np.testing.assert_array_equal(x_a, x_b)
        np.testing.assert_array_equal(y_a, y_b)
    assert not np.array_equal(first[0][0], other_seed[0][0])
    (x_train, _), (x_test, y_test) = first
    np.testing.assert_array_equal(np.bincount(y_test), [3] * 10)
    train_images = {image.tobytes() for image in x_train}
    assert not any(image.tobytes() in train_images for image in x_test)


def test_rejects_bad_split_arguments(monkeypatch):
    def load():
        raise AssertionError("arguments are checked before any data is read")

    monkeypatch.setattr(fashion_mnist, "_load_uint8", load)
    for test_fraction in [0, 1, -0.1, "0.2", True]:
        with pytest.raises(ValueError, match="test_fraction"):
            load_fashion_mnist(test_fraction=test_fraction)
    for seed in [-1, 1.5, None]:
        with pytest.raises(ValueError, match="seed"):
            load_fashion_mnist(seed=seed)


def _write_idx(path, array, magic):
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype("uint8").tobytes())


def test_reads_idx_files(tmp_path, monkeypatch):
    (train_x, train_y), (test_x, test_y) = _small_dataset(np.random.default_rng(1))
    for split, images, labels in (("train", train_x, train_y), ("t10k", test_x, test_y)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images, 0x803)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels, 0x801)
    monkeypatch.setattr(fashion_mnist, "_DEBIAN_DIR", tmp_path)
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    np.testing.assert_array_equal(x_train[..., 0], train_x / np.float32(255))
    np.testing.assert_array_equal(y_train, train_y)
    np.testing.assert_array_equal(x_test[..., 0], test_x / np.float32(255))
    np.testing.assert_array_equal(y_test, test_y)


def test_rejects_broken_idx_files(tmp_path):
    labels = np.zeros(10, dtype="uint8")
    _write_idx(tmp_path / "wrong_magic.gz", labels, 0x803)
    with pytest.raises(ValueError, match="not an idx file"):
        fashion_mnist._read_idx(tmp_path / "wrong_magic.gz", 0x801)
    with gzip.open(tmp_path / "truncated.gz", "wb") as file:
        file.write(np.array([0x801, 10], dtype=">i4").tobytes() + b"\0" * 9)
    with pytest.raises(ValueError, match="holds 9 values"):
        fashion_mnist._read_idx(tmp_path / "truncated.gz", 0x801)


def test_falls_back_to_keras_without_the_debian_files(tmp_path, monkeypatch):
    data = _small_dataset(np.random.default_rng(2))
    monkeypatch.setattr(fashion_mnist, "_DEBIAN_DIR", tmp_path)
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", lambda: data)
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    assert x_train.shape == (100, 28, 28, 1) and x_test.shape == (50, 28, 28, 1)
    assert x_train.dtype == np.float32 and y_train.dtype == y_test.dtype == np.int32
    np.testing.assert_array_equal(x_test[..., 0], data[1][0] / np.float32(255))


def test_failed_fallback_names_the_apt_package(tmp_path, monkeypatch):
    def load_data():
        raise Exception("URL fetch failure on https://storage.googleapis.com/...")

    monkeypatch.setattr(fashion_mnist, "_DEBIAN_DIR", tmp_path)
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", load_data)
    with pytest.raises(RuntimeError, match="apt-get install dataset-fashion-mnist") as raised:
        load_fashion_mnist()
    assert "URL fetch failure" in str(raised.value)
