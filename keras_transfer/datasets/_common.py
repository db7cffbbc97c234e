"""Helpers shared by the dataset loaders: scaling and the seeded split."""

from __future__ import annotations

import numpy as np

from keras_transfer._checks import check_integer, check_number

DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SEED = 1337


def to_unit_images(pixels: np.ndarray, max_value: float, height: int, width: int) -> np.ndarray:
    """Flat or 2-D pixel rows in [0, max_value] -> float32 `(N, H, W, 1)` in [0, 1]."""
    images = np.asarray(pixels, dtype="float32") / np.float32(max_value)
    return images.reshape(-1, height, width, 1)


def split_train_test(
    images: np.ndarray, labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A stratified split, the same for the same `seed`.

    Each class gives `test_fraction` of its examples (at least one) to the
    test set; both sets come back shuffled.
    """
    check_split_args(test_fraction, seed)
    labels = np.asarray(labels, dtype="int32")
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test_count = min(max(1, round(len(members) * test_fraction)), len(members) - 1)
        test_parts.append(members[:test_count])
        train_parts.append(members[test_count:])
    train = rng.permutation(np.concatenate(train_parts))
    test = rng.permutation(np.concatenate(test_parts))
    return (images[train], labels[train]), (images[test], labels[test])


def check_split_args(test_fraction, seed):
    """Raises `ValueError` for a bad split; loaders call it before reading data."""
    check_number(
        test_fraction,
        "test_fraction",
        "the share of each class held out for testing",
        low=0,
        high=1,
        low_open=True,
        high_open=True,
    )
    check_integer(seed, "seed", low=0)
