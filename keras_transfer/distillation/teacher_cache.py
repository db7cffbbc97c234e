"""`cache_teacher_outputs`: run a frozen teacher once, reuse its outputs every epoch."""

from __future__ import annotations

import keras
import numpy as np

from keras_transfer._checks import check_integer
from keras_transfer.distillation.distillation_model import (
    LABELS,
    TEACHER_FEATURES,
    TEACHER_OUTPUTS,
    DistillationModel,
)
from keras_transfer.features.pipeline import (
    augmentation_layers,
    is_dataset,
    numpy_batches,
    random_ops,
)


def cache_teacher_outputs(
    model: DistillationModel,
    x,
    y=None,
    batch_size: int = 32,
    allow_random: bool = False,
) -> tuple:
    """Runs a `DistillationModel`'s teacher once over a dataset, for `fit`.

    The teacher is frozen and runs in inference mode, so on a deterministic
    dataset it gives the same outputs every epoch: computing them once and
    reusing them trains the student exactly as running the teacher on every
    batch would, at the cost of one teacher pass instead of one per epoch.
    The teacher's inputs (`teacher_inputs`, e.g. a tokenizer) are prepared
    here, outside the training step, so they may be preprocessing that only
    runs eagerly.

    Returns `(x, targets)` for `model.fit(x, targets, ...)` (or
    `validation_data`): `x` the student's inputs as arrays and `targets` a dict
    of the labels (if any), the teacher's outputs and, for feature
    distillation, the teacher layer's features. Give `fit` its `batch_size`
    and `shuffle` as for any arrays.

    Refuses a `tf.data` pipeline that draws random numbers (augmentation in a
    `map`; shuffling is fine) and random augmentation layers in a
    `teacher_inputs` layer: cached outputs would keep one draw forever.
    `allow_random=True` accepts them anyway (one augmented copy, fixed).

    Args:
        model: the `kt.DistillationModel` whose teacher to run.
        x: inputs as an array or a dict/list of arrays, or a finite
            `tf.data.Dataset` of `(inputs, labels)` or `inputs` batches.
        y: labels for array inputs; `None` for pure distillation.
        batch_size: batch size of the teacher pass over arrays.
        allow_random: cache one draw of a random pipeline anyway.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> teacher.trainable = False
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model = kt.DistillationModel(teacher, student)
    >>> model.compile(optimizer="adam")
    >>> x, targets = kt.cache_teacher_outputs(model, np.ones((8, 4)))
    >>> targets["teacher_outputs"].shape
    (8, 3)
    >>> history = model.fit(x, targets, epochs=2, verbose=0)
    """
    if not isinstance(model, DistillationModel):
        raise TypeError(
            "`cache_teacher_outputs` takes the `kt.DistillationModel` whose teacher it runs, "
            f"got {type(model).__name__}."
        )
    if is_dataset(x) and y is not None:
        raise ValueError("A dataset carries its own labels: pass `y=None` with a dataset.")
    check_integer(batch_size, "batch_size", "examples per teacher pass", low=1)
    if not allow_random:
        _check_deterministic(model, x)
    parts = {"x": [], LABELS: [], TEACHER_OUTPUTS: [], TEACHER_FEATURES: []}
    predictor = model.teacher_with_features()
    for inputs, labels in numpy_batches(x, y, batch_size):
        outputs = predictor.predict_on_batch(model.teacher_view(inputs))
        if model.teacher_layer is not None:
            outputs, features = outputs
            parts[TEACHER_FEATURES].append(np.asarray(features))
        parts[TEACHER_OUTPUTS].append(np.asarray(outputs))
        parts["x"].append(model.student_view(inputs))
        if labels is not None:
            parts[LABELS].append(labels)
    if not parts["x"]:
        raise ValueError("`cache_teacher_outputs` was given no data (an empty dataset?).")
    targets = {key: _concatenate(parts[key]) for key in (LABELS, TEACHER_OUTPUTS, TEACHER_FEATURES)}
    return _concatenate(parts["x"]), {
        key: value for key, value in targets.items() if value is not None
    }


def _check_deterministic(model, x):
    if is_dataset(x):
        found = random_ops(x)
        if found:
            raise ValueError(
                f"The dataset draws random numbers ({sorted(found)}), e.g. augmentation "
                "in a `map`: cached teacher outputs (and student inputs) would keep one draw "
                "for every epoch. Cache the un-augmented dataset, train without the cache "
                "(the teacher then runs on every batch), or pass `allow_random=True` to "
                "cache one draw on purpose."
            )
    hook = model.teacher_inputs
    if isinstance(hook, keras.layers.Layer):
        random_layers = [layer.name for layer in augmentation_layers(hook)]
        if random_layers:
            raise ValueError(
                f"The `teacher_inputs` layer '{hook.name}' holds random augmentation layers "
                f"{random_layers}: cached teacher outputs would keep one draw of them. "
                "Train without the cache, or pass `allow_random=True`."
            )


def _concatenate(batches: list):
    if not batches:
        return None
    columns = [keras.tree.flatten(batch) for batch in batches]
    leaves = [np.concatenate(column, axis=0) for column in zip(*columns)]
    return keras.tree.pack_sequence_as(batches[0], leaves)
