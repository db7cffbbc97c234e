"""Labelled examples for the Fisher information: `(x, y)` arrays or a batched
`tf.data.Dataset`, cut into numpy batches of a fixed size."""

from __future__ import annotations

import keras
import numpy as np


def labelled_batches(data, batch_size: int, samples: int | None):
    """Yields `(x, y)` numpy batches of at most `batch_size` examples, and at
    most `samples` examples in all (every example when `samples` is `None`).

    `data` is `(x, y)` (arrays, or dicts / lists of arrays for several inputs)
    or a `tf.data.Dataset` of batches `(x, y)` or `(x, y, sample_weight)`,
    batched as for `fit` (sample weights are ignored).
    """
    remaining = samples
    for x, y in _source_batches(data, batch_size):
        count = _rows(x)
        for start in range(0, count, batch_size):
            stop = min(count, start + batch_size)
            if remaining is not None:
                stop = min(stop, start + remaining)
                remaining -= stop - start
            window = slice(start, stop)
            yield _slice(x, window), _slice(y, window)
            if remaining == 0:
                return


def example_count(data, samples: int | None) -> int | None:
    """How many examples `labelled_batches` yields, when known in advance."""
    if is_dataset(data):
        return samples
    count = _rows(data[0])
    return count if samples is None else min(count, samples)


def is_dataset(data) -> bool:
    """True for a `tf.data.Dataset` (checked by type name: no TensorFlow import)."""
    name = type(data).__name__
    return name.endswith("Dataset") or "DatasetV" in name


def _source_batches(data, batch_size: int):
    if is_dataset(data):
        for element in data:
            yield _labelled_element(element)
        return
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(
            "`data` must be labelled examples: a tuple `(x, y)` of arrays, or a batched "
            f"`tf.data.Dataset` of `(x, y)` batches; got {_describe(data)}."
        )
    x, y = (keras.tree.map_structure(np.asarray, part) for part in data)
    if _rows(x) != _rows(y):
        raise ValueError(
            f"`data` holds {_rows(x)} inputs but {_rows(y)} labels: give one label per example."
        )
    yield x, y


def _labelled_element(element):
    if not isinstance(element, tuple) or len(element) not in (2, 3):
        raise ValueError(
            "The dataset must yield labelled batches `(x, y)` (or `(x, y, sample_weight)`); "
            f"it yields {_describe(element)}. Map it to `(inputs, labels)` pairs."
        )
    x, y = (keras.tree.map_structure(np.asarray, part) for part in element[:2])
    if any(np.ndim(label) == 0 for label in keras.tree.flatten(y)):
        raise ValueError(
            "The dataset yields single examples (its labels are scalars), not batches. "
            "Batch it first, e.g. `dataset.batch(32)`."
        )
    return x, y


def _rows(structure) -> int:
    return len(keras.tree.flatten(structure)[0])


def _slice(structure, window: slice):
    return keras.tree.map_structure(lambda array: array[window], structure)


def _describe(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"
