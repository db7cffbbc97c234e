"""`domain_pairs`: labelled source and unlabelled target batches, zipped."""

from __future__ import annotations

import warnings

import keras
import numpy as np

from keras_transfer._checks import check_integer
from keras_transfer.adaptation.domain_adaptation_model import SOURCE, TARGET

_DEFAULT_SHUFFLE_BUFFER = 10_000


def domain_pairs(
    source,
    target,
    batch_size: int = 32,
    target_batch_size: int | None = None,
    shuffle: bool = True,
    seed: int | None = None,
    shuffle_buffer: int | None = None,
):
    """Zips labelled source and unlabelled target data into training batches.

    Builds the batches `kt.DomainAdaptationModel.fit` takes,
    `({"source": x_source, "target": x_target}, y_source)`, from two datasets
    of different lengths. One epoch is one pass over the source; the target
    is repeated (and reshuffled on each pass) as often as needed, or cut short.

    Works on every backend (Keras' `fit` reads `tf.data` datasets on JAX and
    PyTorch too). Floating-point inputs are cast to `keras.config.floatx()`.

    Args:
        source: `(x_source, y_source)`: arrays (or dicts / tuples of arrays)
            of labelled examples, or a `tf.data.Dataset` of single
            `(x, y)` examples (not batches: `.unbatch()` a batched one).
        target: `x_target`, arrays or a `tf.data.Dataset` of single examples,
            unlabelled. Labels found in it (an `(x, y)` pair) are dropped
            with a warning: they are never used.
        batch_size: the number of source examples per batch. Defaults to 32.
        target_batch_size: the number of target examples per batch; defaults
            to `batch_size`.
        shuffle: shuffle both domains, anew on each pass. Defaults to `True`.
        seed: the shuffling seed.
        shuffle_buffer: the shuffle buffer size; defaults to the dataset's
            size (at most 10,000 for a dataset of unknown size).

    Returns:
        A `tf.data.Dataset` of `({"source": x, "target": x}, y)` batches.

    Example:

    >>> import numpy as np
    >>> import keras_transfer as kt
    >>> pairs = kt.domain_pairs(
    ...     (np.zeros((100, 3)), np.zeros(100)), np.ones((30, 3)), batch_size=16
    ... )
    >>> len(pairs)  # one pass over the 100 source examples
    7
    >>> (x, y), = pairs.take(1).as_numpy_iterator()
    >>> x["source"].shape, x["target"].shape, y.shape
    ((16, 3), (16, 3), (16,))
    """
    import tensorflow as tf

    check_integer(batch_size, "batch_size", "source examples per batch", low=1)
    if target_batch_size is not None:
        check_integer(target_batch_size, "target_batch_size", "target examples per batch", low=1)
    target_batch_size = target_batch_size or batch_size
    source_ds, source_size = _source_dataset(tf, source)
    target_ds, target_size = _target_dataset(tf, target, source_ds.element_spec[0])
    _check_same_examples(source_ds.element_spec[0], target_ds.element_spec)
    source_ds = source_ds.map(lambda x, y: (_cast_floats(tf, x), y))
    # tf.data spreads a tuple element over the arguments.
    target_ds = target_ds.map(lambda *x: _cast_floats(tf, x if len(x) > 1 else x[0]))
    if shuffle:
        source_ds = source_ds.shuffle(
            _buffer(shuffle_buffer, source_size), seed=seed, reshuffle_each_iteration=True
        )
        target_seed = None if seed is None else seed + 1
        target_ds = target_ds.shuffle(
            _buffer(shuffle_buffer, target_size), seed=target_seed, reshuffle_each_iteration=True
        )
    source_ds = source_ds.batch(batch_size)
    target_ds = target_ds.repeat().batch(target_batch_size, drop_remainder=True)
    pairs = tf.data.Dataset.zip((source_ds, target_ds))
    pairs = pairs.map(lambda s, t: ({SOURCE: s[0], TARGET: t}, s[1]))
    return pairs.prefetch(tf.data.AUTOTUNE)


def _source_dataset(tf, source):
    if isinstance(source, tf.data.Dataset):
        spec = source.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ValueError(
                "The source dataset must yield `(x, y)` examples: the source is "
                f"the labelled domain. Its elements are {spec}."
            )
        return source, _dataset_size(tf, source, "source")
    if not (isinstance(source, (tuple, list)) and len(source) == 2):
        raise TypeError(
            "`source` must be `(x_source, y_source)` (labelled examples) or a "
            f"tf.data.Dataset of `(x, y)` examples; got {type(source).__name__}."
        )
    x, y = source
    size = _array_size(x, "source inputs")
    if _array_size(y, "source labels") != size:
        raise ValueError(f"The source has {size} inputs but {_array_size(y, 'labels')} labels.")
    return tf.data.Dataset.from_tensor_slices((_as_arrays(x), _as_arrays(y))), size


def _target_dataset(tf, target, source_spec):
    if isinstance(target, tf.data.Dataset):
        if _is_labelled(target.element_spec, source_spec):
            _warn_labels()
            target = target.map(lambda x, y: x)
        return target, _dataset_size(tf, target, "target")
    if _is_labelled(target, source_spec):
        _warn_labels()
        target = target[0]
    size = _array_size(target, "target inputs")
    return tf.data.Dataset.from_tensor_slices(_as_arrays(target)), size


def _is_labelled(target, source_spec) -> bool:
    """An `(x, y)` pair where plain `x` was expected."""
    if _same_structure(target, source_spec):
        return False
    return (
        isinstance(target, tuple) and len(target) == 2 and _same_structure(target[0], source_spec)
    )


def _same_structure(a, b) -> bool:
    try:
        keras.tree.assert_same_structure(a, b)
    except (ValueError, TypeError):
        return False
    return True


def _warn_labels():
    warnings.warn(
        "domain_pairs: the target data carries labels; unsupervised domain "
        "adaptation does not use them, so they are dropped. Keep them aside "
        "to score the adapted model (`model.evaluate(x_target, y_target)`).",
        stacklevel=3,
    )


def _check_same_examples(source_spec, target_spec):
    if not _same_structure(source_spec, target_spec):
        raise ValueError(
            f"Source and target examples differ in structure: {source_spec} vs "
            f"{target_spec}. Both go through one feature extractor."
        )
    for s, t in zip(keras.tree.flatten(source_spec), keras.tree.flatten(target_spec)):
        s_shape, t_shape = tuple(s.shape), tuple(t.shape)
        if len(s_shape) != len(t_shape) or any(
            a is not None and b is not None and a != b for a, b in zip(s_shape, t_shape)
        ):
            raise ValueError(
                f"Source examples have shape {s_shape} but target examples {t_shape}: "
                "both domains go through one feature extractor. Bring them to one "
                "size first (e.g. resize images, pad or truncate token sequences)."
            )


def _cast_floats(tf, structure):
    floatx = keras.config.floatx()
    return keras.tree.map_structure(
        lambda x: tf.cast(x, floatx) if x.dtype.is_floating else x, structure
    )


def _as_arrays(structure):
    return keras.tree.map_structure(np.asarray, structure)


def _array_size(structure, what: str) -> int:
    leaves = keras.tree.flatten(structure)
    if not leaves:
        raise ValueError(f"The {what} are empty.")
    sizes = {len(np.asarray(leaf)) if np.ndim(leaf) else -1 for leaf in leaves}
    if -1 in sizes or len(sizes) != 1:
        raise ValueError(
            f"The {what} must be arrays with one row per example, all of one "
            f"length; got lengths {sorted(sizes)}."
        )
    size = sizes.pop()
    if size == 0:
        domain = what.split()[0]
        raise ValueError(
            f"The {what} are empty: domain adaptation needs {domain} examples. "
            "Check the data you pass to domain_pairs."
        )
    return size


def _dataset_size(tf, dataset, domain: str) -> int | None:
    cardinality = int(dataset.cardinality())
    if cardinality == 0 or (
        cardinality == tf.data.UNKNOWN_CARDINALITY and not list(dataset.take(1))
    ):
        raise ValueError(
            f"The {domain} dataset is empty: domain adaptation needs {domain} examples."
        )
    if cardinality == tf.data.INFINITE_CARDINALITY and domain == SOURCE:
        raise ValueError(
            "The source dataset is infinite, so an epoch would never end. Pass a "
            "finite one (e.g. without `.repeat()`); domain_pairs repeats the target."
        )
    return cardinality if cardinality > 0 else None


def _buffer(shuffle_buffer, size) -> int:
    if shuffle_buffer is not None:
        return check_integer(shuffle_buffer, "shuffle_buffer", "the shuffle buffer size", low=1)
    return size if size is not None else _DEFAULT_SHUFFLE_BUFFER
