"""Compile: the loss and metric objects `Model.compile` builds from its arguments.

A training model that takes losses and metrics per task (`kt.MultiTaskModel`)
builds them itself, but must build them as `compile` does, so that
`loss="mse"` or `metrics=["accuracy"]` mean there what they mean on a plain
model (same wrapper, same name, same choice of accuracy).
"""

from __future__ import annotations

import keras


def compile_loss_object(identifier) -> keras.losses.Loss:
    """The `keras.losses.Loss` that `compile(loss=identifier)` would use.

    A string or a function becomes Keras' `LossFunctionWrapper` (which brings
    labels and predictions to one rank first) named after it; a `Loss` is
    returned as it is. The shape-dependent shortcuts `"crossentropy"` and
    `"ce"` are not resolved here (they need the labels' shape). Relies on
    `keras.src.trainers.compile_utils.get_loss(identifier, y_true, y_pred)`,
    which reads the shapes only for those shortcuts.
    """
    from keras.src.trainers import compile_utils

    if str(identifier).lower() in ("crossentropy", "ce"):
        raise ValueError(
            f"The loss shortcut {identifier!r} depends on the labels' shape; name the "
            "loss, e.g. 'sparse_categorical_crossentropy' or 'binary_crossentropy'."
        )
    return compile_utils.get_loss(identifier, None, None)


def compile_metric_object(identifier, y_true, y_pred) -> keras.metrics.Metric:
    """The `keras.metrics.Metric` that `compile(metrics=[identifier])` would use.

    `"accuracy"` / `"acc"` become binary, sparse categorical or categorical
    accuracy by the shapes of `y_true` and `y_pred` (anything with a `shape`:
    `keras.KerasTensor`s will do), as in `compile`; a function is wrapped in
    a `MeanMetricWrapper`. The metric is named after a string identifier, or
    after the object. A metric object passed in is renamed in place: pass a
    copy. Relies on `keras.src.trainers.compile_utils.get_metric`.
    """
    from keras.src.trainers import compile_utils

    return compile_utils.get_metric(identifier, y_true, y_pred)
