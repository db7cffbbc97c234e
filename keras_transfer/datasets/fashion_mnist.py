"""`load_fashion_mnist`: Zalando's Fashion-MNIST, from Debian's package or Keras."""

from __future__ import annotations

import gzip
import pathlib

import keras
import numpy as np

from keras_transfer.datasets._common import (
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    check_split_args,
    split_train_test,
    to_unit_images,
)

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_DEBIAN_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
_APT_INSTALL = "apt-get install dataset-fashion-mnist"
# idx magic numbers: 0x08 = unsigned bytes, then the number of dimensions.
_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801
_HEIGHT = _WIDTH = 28


def load_fashion_mnist(
    test_fraction: float | None = None, seed: int = DEFAULT_SEED
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Loads Fashion-MNIST: 70,000 28x28 grey photos of clothes, 10 classes.

    Zalando Research's drop-in replacement for MNIST (H. Xiao, K. Rasul and
    R. Vollgraf, 2017; MIT License, (c) 2017 Zalando SE): 60,000 training
    and 10,000 test images of articles sold by Zalando, 7,000 of each class
    (names in `FASHION_MNIST_CLASSES`). Harder than MNIST and with the same
    shape, it is a natural target for a model pretrained on digits, or a
    source task for small image classifiers.

    Where the data comes from: the Debian/Ubuntu package
    `dataset-fashion-mnist` (`apt-get install dataset-fashion-mnist`), whose
    idx files in `/usr/share/datasets/fashion-mnist/` are read directly, so
    it works offline. Without that package it falls back to
    `keras.datasets.fashion_mnist.load_data()`, which downloads the same
    files (about 30 MB) once into `~/.keras/datasets`.

    Args:
        test_fraction: `None` (the default) keeps the official split
            (60,000 / 10,000, in the files' order). A number between 0 and 1
            pools all 70,000 images and holds out that fraction of each
            class, shuffled, as `load_mnist_5k` does.
        seed: seed of that stratified split; unused with the official
            split. Defaults to 1337.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: images as float32 arrays of
        shape `(N, 28, 28, 1)` with values in [0, 1] (light article on
        black), labels as int32 arrays of shape `(N,)` with values 0-9.

    Raises:
        RuntimeError: the Debian package is not installed and Keras could
            not download the data.

    Example:

    >>> from keras_transfer.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist
    >>> (x_train, y_train), (x_test, y_test) = load_fashion_mnist()  # doctest: +SKIP
    >>> x_train.shape, x_test.shape  # doctest: +SKIP
    ((60000, 28, 28, 1), (10000, 28, 28, 1))
    >>> FASHION_MNIST_CLASSES[y_train[0]]  # doctest: +SKIP
    'Ankle boot'
    """
    # Only the seed matters for the official split; check it all the same.
    check_split_args(DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction, seed)
    (x_train, y_train), (x_test, y_test) = _load_uint8()
    if test_fraction is not None:
        # Split the bytes, not the floats: a quarter of the memory.
        pixels = np.concatenate([x_train, x_test])
        labels = np.concatenate([y_train, y_test])
        (x_train, y_train), (x_test, y_test) = split_train_test(pixels, labels, test_fraction, seed)
    return _as_float_split(x_train, y_train), _as_float_split(x_test, y_test)


def _as_float_split(pixels: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images = to_unit_images(pixels, max_value=255, height=_HEIGHT, width=_WIDTH)
    return images, np.asarray(labels, dtype="int32")


def _load_uint8() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    files = {
        (split, kind): _DEBIAN_DIR / f"{split}-{kind}-ubyte.gz"
        for split in ("train", "t10k")
        for kind in ("images-idx3", "labels-idx1")
    }
    if all(path.is_file() for path in files.values()):
        return tuple(
            (
                _read_idx(files[split, "images-idx3"], _IMAGES_MAGIC),
                _read_idx(files[split, "labels-idx1"], _LABELS_MAGIC),
            )
            for split in ("train", "t10k")
        )
    try:
        return keras.datasets.fashion_mnist.load_data()
    except Exception as error:  # Keras raises a bare Exception when a download fails.
        raise RuntimeError(
            f"load_fashion_mnist reads Fashion-MNIST from the Debian/Ubuntu package "
            f"`dataset-fashion-mnist`, whose files are not in {_DEBIAN_DIR}, and "
            f"`keras.datasets.fashion_mnist.load_data()` could not download it "
            f"({error}). Install the package with `{_APT_INSTALL}` (as root), or "
            f"run once where the internet can be reached."
        ) from error


def _read_idx(path: pathlib.Path, magic: int) -> np.ndarray:
    """An idx file (big-endian header: magic, then one int32 per dimension)."""
    with gzip.open(path, "rb") as file:
        data = file.read()
    dims = magic & 0xFF
    header_bytes = 4 * (1 + dims)
    if len(data) < header_bytes or int.from_bytes(data[:4], "big") != magic:
        raise ValueError(f"{path} is not an idx file of unsigned bytes with {dims} dimensions.")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">i4", count=dims, offset=4))
    values = np.frombuffer(data, dtype="uint8", offset=header_bytes)
    if values.size != np.prod(shape):
        raise ValueError(f"{path} holds {values.size} values, its header says {shape}.")
    return values.reshape(shape)
