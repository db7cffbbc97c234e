"""Pins what `_keras_internals.metrics` relies on in Keras."""

import keras
import pytest

from keras_transfer._keras_internals.metrics import metric_direction


@pytest.mark.parametrize(
    "metric, direction",
    [
        (keras.metrics.SparseCategoricalAccuracy(), "up"),
        (keras.metrics.BinaryAccuracy(), "up"),
        (keras.metrics.AUC(), "up"),
        (keras.metrics.MeanSquaredError(), "down"),
        (keras.metrics.CategoricalCrossentropy(), "down"),
        (keras.metrics.MeanMetricWrapper(keras.losses.mean_absolute_error), "down"),
    ],
)
def test_built_in_metrics_say_which_way_they_improve(metric, direction):
    assert metric_direction(metric) == direction


def test_a_metric_written_by_hand_has_no_direction():
    def hits(y_true, y_pred):
        return keras.ops.cast(keras.ops.equal(y_true, y_pred), "float32")

    assert metric_direction(keras.metrics.MeanMetricWrapper(hits)) is None
    assert metric_direction(keras.metrics.Mean()) is None
