"""Small real datasets that load offline, as numpy arrays.

Each loader returns `(x_train, y_train), (x_test, y_test)` like
`keras.datasets`: images as float32 in [0, 1] with shape `(N, H, W, 1)`,
labels as int32 class indices, split by a fixed seed so that every call
(and every backend) sees the same split.
`load_vader` returns sentences instead: arrays of `str` with 0/1 labels.
"""

from keras_transfer.datasets.digits import load_digits
from keras_transfer.datasets.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from keras_transfer.datasets.mnist_5k import load_mnist_5k
from keras_transfer.datasets.vader import load_vader

__all__ = [
    "FASHION_MNIST_CLASSES",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist_5k",
    "load_vader",
]
