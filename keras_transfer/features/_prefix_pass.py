"""The pass of a frozen prefix over one data split, and what may be cached.

Arrays (or dicts and lists of them) and finite, deterministic `tf.data`
datasets can be read again and give the same examples, so a pass over them
stands for every epoch. A Python generator or iterator is read once, and a
`keras.utils.PyDataset` may change between epochs (`on_epoch_end`, random
augmentation in `__getitem__`): those are not cached.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np

from keras_transfer._keras_internals.data import dataset_op_names
from keras_transfer.features._sink import MismatchedBatches, Sink
from keras_transfer.features.pipeline import is_dataset, numpy_batches, predict_padded, random_ops


class UncacheableData(ValueError):
    """The data cannot stand for every epoch; the message says why."""


@dataclasses.dataclass
class CachedSplit:
    """One data split after the prefix pass, ready for the top's `fit`.

    Args:
        x: the tensors crossing the cut (one array, or a list of them).
        y: the labels, as given (arrays) or as collected (a dataset).
        sample_weight: the sample weights, likewise.
        batch_size: a dataset's batch size, or `None` for arrays (the fit's).
        reshuffled: whether a dataset shuffles itself anew every epoch.
        on_disk: whether the arrays are memory-mapped files.
    """

    x: object
    y: object
    sample_weight: object
    batch_size: int | None
    reshuffled: bool
    on_disk: bool

    @property
    def parts(self) -> tuple:
        return (self.x, self.y, self.sample_weight)


def check_replayable(x, steps_per_epoch=None) -> None:
    """Raises `UncacheableData` unless `x` gives the same examples each pass."""
    if is_dataset(x):
        if int(x.cardinality()) == -1:  # tf.data.INFINITE_CARDINALITY
            raise UncacheableData("the dataset repeats forever, so one pass cannot cover it")
        found = random_ops(x)
        if found:
            raise UncacheableData(
                f"the dataset draws random numbers ({sorted(found)}), e.g. augmentation "
                "in a `map`: a cache would keep one draw"
            )
        if steps_per_epoch is not None:
            raise UncacheableData("`steps_per_epoch` cuts a dataset's epochs short")
        return
    leaves = keras.tree.flatten(x)
    if not leaves or not all(len(getattr(leaf, "shape", ())) >= 1 for leaf in leaves):
        raise UncacheableData(
            f"{type(x).__name__} data cannot be read again the same way (a generator or "
            "iterator is read once; a PyDataset may change between epochs); pass arrays "
            "or a `tf.data.Dataset`"
        )


def run_prefix(prefix: keras.Model, x, y, sample_weight, batch_size: int, sink: Sink, verbose):
    """Runs `prefix` once over a split into `sink`; returns a `CachedSplit`."""
    if is_dataset(x):
        return _run_over_dataset(prefix, x, sink, verbose)
    rows = len(keras.tree.flatten(x)[0])
    progress = keras.utils.Progbar(math.ceil(rows / batch_size), verbose=verbose)
    for inputs, _ in numpy_batches(x, None, batch_size):
        features = keras.tree.flatten(predict_padded(prefix, inputs, batch_size))
        if not sink.structure:
            sink.expect(_bytes_per_row(features) * rows)
        sink.add(features=features)
        progress.add(1)
    features = _unlisted(sink.get("features"))
    return CachedSplit(features, y, sample_weight, None, False, sink.on_disk)


def _run_over_dataset(prefix, dataset, sink, verbose):
    count = int(dataset.cardinality())
    batch_size = 0  # The largest batch so far: the dataset's own batch size.
    progress = keras.utils.Progbar(count if count >= 0 else None, verbose=verbose)
    sizes = []
    for batch in dataset:
        inputs, labels, weights = keras.utils.unpack_x_y_sample_weight(batch)
        inputs = keras.tree.map_structure(np.asarray, inputs)
        sizes.append(len(keras.tree.flatten(inputs)[0]))
        batch_size = max(batch_size, sizes[-1])
        features = keras.tree.flatten(predict_padded(prefix, inputs, batch_size))
        if len(sizes) == 1 and count >= 0:
            sink.expect(_bytes_per_row(features) * sizes[0] * count)
        try:
            sink.add(features=features, labels=_numpy(labels), weights=_numpy(weights))
        except MismatchedBatches as error:
            raise UncacheableData(f"the dataset's {error}") from None
        progress.add(1)
    if not sizes:
        raise UncacheableData("the dataset is empty")
    if any(size != sizes[0] for size in sizes[:-1]) or sizes[-1] > sizes[0]:
        raise UncacheableData(
            f"the dataset's batches vary in size ({sorted(set(sizes))}), which arrays "
            "batched by one size would not repeat"
        )
    reshuffled = any("Shuffle" in name for name in dataset_op_names(dataset))
    labels, weights = sink.get("labels"), sink.get("weights")
    features = _unlisted(sink.get("features"))
    return CachedSplit(features, labels, weights, sizes[0], reshuffled, sink.on_disk)


def _bytes_per_row(features: list) -> float:
    return sum(np.asarray(leaf).nbytes / max(len(leaf), 1) for leaf in features)


def _numpy(structure):
    return None if structure is None else keras.tree.map_structure(np.asarray, structure)


def _unlisted(features: list):
    return features[0] if len(features) == 1 else list(features)
