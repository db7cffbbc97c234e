"""Pins `keras_transfer._keras_internals.layers.call_outputs` (a layer's symbolic calls)."""

import keras

from keras_transfer._keras_internals.layers import call_outputs


def test_call_outputs_lists_each_call_oldest_first():
    inputs = keras.Input((3,), name="x")
    dense = keras.layers.Dense(2, name="dense")
    first = dense(inputs)
    second = dense(keras.Input((3,), name="y"))
    calls = call_outputs(dense)
    assert len(calls) == 2
    assert calls[0][0] is first and calls[1][0] is second


def test_a_nested_model_has_one_entry_per_nesting():
    inner_inputs = keras.Input((3,))
    inner = keras.Model(inner_inputs, keras.layers.Dense(2)(inner_inputs), name="inner")
    assert call_outputs(inner) == []  # Its own construction is no call.
    outer_inputs = keras.Input((3,))
    nested = inner(outer_inputs)
    outer = keras.Model(outer_inputs, keras.layers.Dense(1)(nested))
    calls = call_outputs(inner)
    assert len(calls) == 1 and calls[0][0] is nested
    # The tensors can cut the outer graph, as FeatureCache does.
    head = keras.Model(calls[-1][0], outer.outputs)
    assert [layer.name for layer in head.layers][-1] == outer.layers[-1].name


def test_multi_output_calls_are_flattened():
    inputs = keras.Input((4,))
    parts = keras.layers.Lambda(lambda t: [t[:, :2], t[:, 2:]], name="split")(inputs)
    split = keras.Model(inputs, parts)
    (outputs,) = call_outputs(split.get_layer("split"))
    assert [tuple(tensor.shape) for tensor in outputs] == [(None, 2), (None, 2)]
