"""Batches of a cache on disk, read a batch at a time.

Given arrays, Keras' TensorFlow backend first copies them whole into one
tensor, which would load a memory-mapped cache back into memory. A
`PyDataset` reads only the rows of each batch, on every backend.
"""

from __future__ import annotations

import math

import keras
import numpy as np


class CachedBatches(keras.utils.PyDataset):
    """`(x, y, sample_weight)` batches of arrays, shuffled anew every epoch.

    Args:
        x, y, sample_weight: structures of arrays (or memmaps) with one row
            per example; `y` and `sample_weight` may be `None`.
        batch_size: rows a batch.
        shuffle: `True` (a new order of all rows each epoch), `"batch"`
            (each batch's rows shuffled among themselves) or `False`, as
            `Model.fit` understands it for arrays.
    """

    def __init__(self, x, y, sample_weight, batch_size: int, shuffle):
        super().__init__()
        self.parts = tuple(part for part in (x, y, sample_weight) if part is not None)
        self.rows = len(keras.tree.flatten(x)[0])
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.order = self._new_order()

    def __len__(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def __getitem__(self, index: int):
        start = index * self.batch_size
        rows = self.order[start : start + self.batch_size]
        if self.shuffle == "batch":
            rows = np.random.permutation(rows)
        # Reading in ascending order keeps the disk access sequential; the
        # batch is then put in the drawn order.
        ascending = np.sort(rows)
        where = np.searchsorted(ascending, rows)
        return tuple(
            keras.tree.map_structure(lambda array: np.asarray(array[ascending])[where], part)
            for part in self.parts
        )

    def on_epoch_end(self):
        self.order = self._new_order()

    def _new_order(self) -> np.ndarray:
        if self.shuffle is True:
            return np.random.permutation(self.rows)
        return np.arange(self.rows)


def split_for_validation(structures, validation_split: float):
    """`(training, validation)` parts of each structure, split as `Model.fit`'s
    `validation_split` splits arrays: the last share of the rows is held out."""
    rows = len(keras.tree.flatten(structures[0])[0])
    split_at = int(math.floor(rows * (1.0 - validation_split)))

    def part(window):
        return [
            None if s is None else keras.tree.map_structure(lambda a: a[window], s)
            for s in structures
        ]

    return part(slice(0, split_at)), part(slice(split_at, rows))
