"""Pins what `keras_transfer._keras_internals.compile` relies on in Keras."""

import keras
import numpy as np
import pytest

from keras_transfer._keras_internals.compile import compile_loss_object, compile_metric_object


def numpy_of(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


def test_a_loss_name_becomes_the_loss_a_compiled_model_computes():
    loss = compile_loss_object("mse")
    assert isinstance(loss, keras.losses.Loss) and loss.name == "mse"
    # Labels of one rank less are expanded, as in a compiled model.
    value = loss(np.array([1.0, 2.0]), np.array([[0.0], [0.0]]))
    np.testing.assert_allclose(numpy_of(value), 2.5)
    given = keras.losses.Huber()
    assert compile_loss_object(given) is given


def test_shape_dependent_shortcuts_are_refused():
    with pytest.raises(ValueError, match="name the loss"):
        compile_loss_object("crossentropy")


@pytest.mark.parametrize(
    "labels, outputs, kind",
    [
        ((None,), (None, 3), keras.metrics.SparseCategoricalAccuracy),
        ((None, 3), (None, 3), keras.metrics.CategoricalAccuracy),
        ((None, 1), (None, 1), keras.metrics.BinaryAccuracy),
    ],
)
def test_accuracy_is_chosen_by_shapes_and_named_as_given(labels, outputs, kind):
    metric = compile_metric_object("acc", keras.KerasTensor(labels), keras.KerasTensor(outputs))
    assert isinstance(metric, kind) and metric.name == "acc"


def test_a_metric_function_is_wrapped_and_named_after_it():
    metric = compile_metric_object(keras.metrics.mean_absolute_error, None, None)
    assert isinstance(metric, keras.metrics.Metric)
    assert metric.name == "mean_absolute_error"
