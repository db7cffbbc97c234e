"""Pins what `keras_transfer._keras_internals.layers` relies on in Keras."""

import keras

from keras_transfer._keras_internals.layers import flatten_layers, trainable_capable_variables


class Holder(keras.layers.Layer):
    """Holds sublayers in an attribute and in a list, outside any graph."""

    def __init__(self):
        super().__init__()
        self.inner = keras.layers.Dense(2, name="inner")
        self.listed = [keras.layers.Dense(2, name="listed")]

    def call(self, x):
        return self.listed[0](self.inner(x))


def test_flatten_layers_reaches_attributes_and_lists_once_each():
    holder = Holder()
    model = keras.Sequential([keras.Input((3,)), holder])
    names = [layer.name for layer in flatten_layers(model, include_self=False)]
    assert {holder.name, "inner", "listed"} <= set(names)
    assert len(names) == len(set(names))
    assert model not in flatten_layers(model, include_self=False)
    assert flatten_layers(holder)[0] is holder
    assert holder not in flatten_layers(holder, include_self=False)


def test_trainable_capable_variables_ignore_the_trainable_flag():
    dense = keras.layers.Dense(2)
    norm = keras.layers.BatchNormalization()
    keras.Sequential([keras.Input((3,)), dense, norm])
    dense.trainable = False
    norm.trainable = False
    assert dense.trainable_variables == []
    assert [v.path for v in trainable_capable_variables(dense)] == [
        dense.kernel.path,
        dense.bias.path,
    ]
    # Moving statistics are never trainable-capable; gamma and beta are.
    assert {v.name for v in trainable_capable_variables(norm)} == {"gamma", "beta"}
