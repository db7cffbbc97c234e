"""`load_digits`: scikit-learn's 8x8 handwritten digits (UCI optdigits)."""

from __future__ import annotations

import numpy as np

from keras_transfer.datasets._common import (
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    check_split_args,
    split_train_test,
    to_unit_images,
)

_INSTALL = "pip install scikit-learn"


def load_digits(
    test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = DEFAULT_SEED
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Loads scikit-learn's handwritten digits: 1,797 images, 8x8 grey.

    The test set of the UCI "Optical Recognition of Handwritten Digits"
    dataset (E. Alpaydin and C. Kaynak, 1998; CC BY 4.0), bundled with
    scikit-learn (BSD-3) as `sklearn.datasets.load_digits`, so it loads
    offline. Each pixel counts the "on" pixels of a 4x4 block of a 32x32
    bitmap (0-16). Written by other people and preprocessed differently
    from MNIST, it makes a real target domain for a model pretrained on
    `load_mnist_5k` (upsample the images to 28x28 first).

    Args:
        test_fraction: fraction of each class held out for the test set.
            Defaults to 0.2 (1,438 training and 359 test images).
        seed: seed of the stratified split; the same seed always gives the
            same split. Defaults to 1337.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: images as float32 arrays of
        shape `(N, 8, 8, 1)` with values in [0, 1] (the 0-16 counts divided
        by 16; white digit on black), labels as int32 arrays of shape `(N,)`
        with values 0-9.

    Example:

    >>> from keras_transfer.datasets import load_digits
    >>> (x_train, y_train), (x_test, y_test) = load_digits()
    >>> x_train.shape, x_test.shape
    ((1438, 8, 8, 1), (359, 8, 8, 1))
    """
    check_split_args(test_fraction, seed)
    try:
        from sklearn import datasets
    except ImportError:
        raise ImportError(
            f"load_digits reads the digits bundled with scikit-learn, which is not "
            f"installed. Install it with `{_INSTALL}`."
        ) from None
    bunch = datasets.load_digits()
    images = to_unit_images(bunch.images, max_value=16, height=8, width=8)
    return split_train_test(images, bunch.target, test_fraction, seed)
