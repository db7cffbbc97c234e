import sys

import numpy as np
import pytest

from keras_transfer.datasets import load_digits


@pytest.fixture(scope="module")
def splits():
    return load_digits()


def test_shapes_and_dtypes(splits):
    (x_train, y_train), (x_test, y_test) = splits
    assert x_train.shape == (1438, 8, 8, 1)
    assert x_test.shape == (359, 8, 8, 1)
    assert y_train.shape == (1438,)
    assert y_test.shape == (359,)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int32


def test_pixels_are_counts_over_16(splits):
    (x_train, _), (x_test, _) = splits
    for images in (x_train, x_test):
        assert images.min() == 0.0
        assert images.max() == 1.0
        np.testing.assert_array_equal(images * 16, np.round(images * 16))


def test_classes_are_balanced_in_both_sets(splits):
    (_, y_train), (_, y_test) = splits
    assert set(np.unique(y_train)) == set(np.unique(y_test)) == set(range(10))
    test_counts = np.bincount(y_test)
    assert test_counts.min() >= 34 and test_counts.max() <= 37
    # Each class gives a fifth of its examples to the test set.
    fractions = test_counts / (test_counts + np.bincount(y_train))
    np.testing.assert_allclose(fractions, 0.2, atol=0.01)


def test_sets_are_disjoint(splits):
    (x_train, _), (x_test, _) = splits
    train_rows = {image.tobytes() for image in x_train}
    # The digits hold a few exact duplicates; almost no test image is seen in training.
    assert sum(image.tobytes() in train_rows for image in x_test) <= 3


def test_split_is_deterministic(splits):
    (x_train, y_train), (x_test, y_test) = splits
    (x_train_2, y_train_2), (x_test_2, y_test_2) = load_digits()
    np.testing.assert_array_equal(x_train, x_train_2)
    np.testing.assert_array_equal(y_train, y_train_2)
    np.testing.assert_array_equal(x_test, x_test_2)
    np.testing.assert_array_equal(y_test, y_test_2)


def test_seed_changes_the_split(splits):
    (_, y_train), _ = splits
    (_, y_reseeded), _ = load_digits(seed=7)
    assert len(y_reseeded) == len(y_train)
    assert not np.array_equal(y_train, y_reseeded)


@pytest.mark.parametrize("test_fraction", [0.0, 1.0, "0.2", None])
def test_rejects_bad_test_fraction(test_fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=test_fraction)


def test_missing_scikit_learn_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        load_digits()
