"""Scoring a model on labelled validation data, for the greedy soup.

Each model is scored here, not by `model.evaluate`: the candidate soups are
new, uncompiled models, and one scoring path for the ingredients and the
soups keeps their scores comparable. Predictions run batch by batch
(`predict_on_batch`, padded to one batch shape); the metric accumulates over
the whole validation set.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_transfer._keras_internals.compile import compile_metric_object
from keras_transfer._keras_internals.losses import compiled_loss
from keras_transfer._keras_internals.metrics import metric_direction
from keras_transfer.features.pipeline import is_dataset, numpy_batches, predict_padded

_ACCURACY_NAMES = ("accuracy", "acc")
_MODES = ("auto", "max", "min")


class Scorer:
    """Scores models with one metric on one validation set.

    `metric` is a metric name or object as `compile(metrics=...)` takes it
    (`"accuracy"` picks binary, sparse categorical or categorical accuracy
    from the shapes of the labels and predictions, as `compile` does), a
    function `(y_true, y_pred) -> per-example values` (averaged), or
    `"loss"`: the compiled loss of `loss_model`.
    """

    def __init__(self, metric, mode: str, validation_data, batch_size: int, loss_model):
        if mode not in _MODES:
            raise ValueError(f"`mode` must be one of {_MODES}, got {mode!r}.")
        if not (isinstance(metric, str) or callable(metric)):
            raise TypeError(
                "`metric` must be a metric name, a `keras.metrics.Metric` or a function "
                f"`(y_true, y_pred) -> values`, got {type(metric).__name__}."
            )
        self.batch_size = batch_size
        self.batches = _batch_source(validation_data, batch_size)
        self.name = metric if isinstance(metric, str) else _name_of(metric)
        self.loss = _compiled_loss(loss_model) if metric == "loss" else None
        # "accuracy" takes its kind from the shapes of the first batch, as in `compile`.
        skip = self.loss is not None or _is_accuracy(metric)
        self.metric = None if skip else compile_metric_object(metric, None, None)
        self.mode = _resolve_mode(mode, metric, self.metric, self.name)

    def better_or_equal(self, score: float, best: float) -> bool:
        """Whether `score` is at least as good as `best` (never for NaN)."""
        return score >= best if self.mode == "max" else score <= best

    def sort_key(self, score: float) -> float:
        """Ascending order of this key is best first; NaN scores last."""
        if np.isnan(score):
            return np.inf
        return -score if self.mode == "max" else score

    def __call__(self, model: keras.Model) -> float:
        total, rows = 0.0, 0
        if self.metric is not None:
            self.metric.reset_state()
        for inputs, labels in self.batches():
            if labels is None:
                raise ValueError(
                    "`validation_data` has no labels: give `(inputs, labels)` arrays or a "
                    "dataset of `(inputs, labels)` batches."
                )
            predictions = predict_padded(model, inputs, self.batch_size)
            count = len(keras.tree.flatten(inputs)[0])
            if self.loss is not None:
                total += count * float(keras.ops.convert_to_numpy(self.loss(labels, predictions)))
            else:
                self._update(labels, predictions)
            rows += count
        if rows == 0:
            raise ValueError("`validation_data` is empty: give it at least one labelled example.")
        if self.loss is not None:
            return total / rows
        return float(keras.ops.convert_to_numpy(self.metric.result()))

    def _update(self, labels, predictions) -> None:
        if isinstance(predictions, (list, tuple, dict)):
            raise ValueError(
                f"The models have several outputs, which `metric={self.name!r}` cannot score "
                "alone; pass `metric='loss'` to score them with their compiled loss."
            )
        if self.metric is None:
            self.metric = compile_metric_object(self.name, np.asarray(labels), predictions)
            self.metric.reset_state()
        self.metric.update_state(labels, predictions)


def _batch_source(validation_data, batch_size: int):
    """A function returning a fresh iterator of `(inputs, labels)` numpy batches."""
    if is_dataset(validation_data):
        return lambda: numpy_batches(validation_data, None, batch_size)
    if isinstance(validation_data, tuple) and len(validation_data) in (2, 3):
        inputs, labels = validation_data[0], validation_data[1]
        return lambda: numpy_batches(inputs, labels, batch_size)
    raise TypeError(
        "`validation_data` must be an `(inputs, labels)` tuple of arrays or a "
        f"`tf.data.Dataset` of `(inputs, labels)` batches, got {type(validation_data).__name__}."
    )


def _compiled_loss(model: keras.Model):
    loss = compiled_loss(model)
    if loss is None:
        raise ValueError(
            "`metric='loss'` scores with the models' compiled loss, but the first model "
            "is not compiled with one: `compile(loss=...)` it, or pass a metric such as "
            "'accuracy' or 'mse'."
        )
    return loss


def _is_accuracy(metric) -> bool:
    return isinstance(metric, str) and metric.lower() in _ACCURACY_NAMES


def _resolve_mode(mode: str, identifier, metric, name: str) -> str:
    if mode != "auto":
        return mode
    if identifier == "loss":
        return "min"
    if _is_accuracy(identifier):
        return "max"
    direction = metric_direction(metric)
    if direction is None:
        raise ValueError(
            f"Cannot tell whether a higher or a lower `{name}` is better: pass "
            "`mode='max'` or `mode='min'`."
        )
    return "max" if direction == "up" else "min"


def _name_of(metric) -> str:
    return getattr(metric, "name", None) or getattr(metric, "__name__", type(metric).__name__)
