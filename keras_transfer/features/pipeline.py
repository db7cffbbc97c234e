"""What a one-pass cache needs from its input pipeline, shared by `FeatureCache`
and `kt.cache_teacher_outputs`.

Arrays or a `tf.data.Dataset` come in; numpy batches go out, each run through
a frozen model at one fixed batch size (so the model's predict step is traced
once, not again for a shorter last batch); and anything that would make a
cached pass differ from the next one (random ops in the pipeline, augmentation
layers) can be found before caching.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_transfer._keras_internals.data import dataset_op_names
from keras_transfer._keras_internals.layers import flatten_layers

# Class-name prefixes of Keras' and KerasCV's random augmentation layers.
AUGMENTATION_NAMES = ("Random", "MixUp", "CutMix", "AugMix", "RandAugment")


def is_dataset(data) -> bool:
    """True for a `tf.data.Dataset` (checked by type name: no TensorFlow import)."""
    name = type(data).__name__
    return name.endswith("Dataset") or "DatasetV" in name


def numpy_batches(x, y, batch_size: int):
    """Yields `(inputs, labels)` numpy batches of arrays or of a dataset.

    `x` is an array or a dict/list of arrays with labels `y` (or `None`), cut
    into batches of `batch_size` rows; or a dataset of `(inputs, labels)` or
    `inputs` batches, taken as they come (labels `None` when absent).

    >>> import numpy as np
    >>> [len(inputs) for inputs, _ in numpy_batches(np.zeros((5, 2)), None, 2)]
    [2, 2, 1]
    """
    if is_dataset(x):
        for batch in x:
            inputs, labels = batch if isinstance(batch, tuple) else (batch, None)
            yield _to_numpy(inputs), None if labels is None else _to_numpy(labels)
        return
    count = len(keras.tree.flatten(x)[0])
    for start in range(0, count, batch_size):
        window = slice(start, start + batch_size)
        yield _slice(x, window), None if y is None else _slice(y, window)


def predict_padded(model: keras.Model, inputs, batch_size: int):
    """`model.predict_on_batch(inputs)` run on a batch of exactly `batch_size` rows.

    A shorter batch (the last one of a pass) is padded with copies of its last
    row and the padding's outputs are dropped. Each new batch shape would
    otherwise trace the model's predict step again (TensorFlow warns about
    such retracing; JAX recompiles silently). Only for inference, where each
    row's output depends on that row alone. A batch longer than `batch_size`
    runs as it is.

    >>> import numpy as np
    >>> import keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    >>> predict_padded(model, np.ones((5, 2)), batch_size=8).shape
    (5, 3)
    """
    count = len(keras.tree.flatten(inputs)[0])
    missing = batch_size - count
    if missing > 0:
        inputs = keras.tree.map_structure(lambda array: _pad(array, missing), inputs)
    outputs = model.predict_on_batch(inputs)
    if missing > 0:
        outputs = keras.tree.map_structure(lambda array: np.asarray(array)[:count], outputs)
    return outputs


def random_ops(dataset) -> set[str]:
    """The random ops a `tf.data` pipeline runs, shuffling aside.

    A `map` that draws random numbers (augmentation) shows up here; shuffling
    (`ShuffleDataset`, its seed generator) does not, since it reorders the
    examples without changing them.
    """
    return {
        name
        for name in dataset_op_names(dataset)
        if "Random" in name and "Shuffle" not in name and name != "RandomDataset"
    }


def augmentation_layers(layer: keras.layers.Layer, include_self: bool = True) -> list:
    """The random augmentation layers in `layer` (itself included by default), at any depth."""
    return [
        sublayer
        for sublayer in flatten_layers(layer, include_self=include_self)
        if type(sublayer).__name__.startswith(AUGMENTATION_NAMES)
    ]


def _pad(array, missing: int):
    array = np.asarray(array)
    return np.concatenate([array, np.repeat(array[-1:], missing, axis=0)])


def _slice(structure, window: slice):
    return keras.tree.map_structure(lambda array: np.asarray(array[window]), structure)


def _to_numpy(structure):
    return keras.tree.map_structure(np.asarray, structure)
