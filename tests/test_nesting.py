import keras

import keras_transfer as kt


class Holder(keras.layers.Layer):
    """Holds a sublayer in an attribute, outside any graph."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.BatchNormalization(name="held_bn")

    def call(self, x):
        return self.norm(x)


def test_nested_layers_reach_every_depth_without_input_layers():
    inner = keras.Sequential([keras.Input((3,)), Holder(name="holder")], name="inner")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(inner(inputs)))
    assert [layer.name for layer in model.layers] == [model.layers[0].name, "inner", "head"]
    names = [layer.name for layer in kt.nested_layers(model)]
    assert sorted(names) == ["head", "held_bn", "holder", "inner"]
    assert kt.nested_layers(model, include_self=True)[0] is model
    for layer in kt.nested_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.5
    assert model.get_layer("inner").get_layer("holder").norm.momentum == 0.5


def test_a_layer_without_sublayers_has_none():
    dense = keras.layers.Dense(2)
    assert kt.nested_layers(dense) == []
    assert kt.nested_layers(dense, include_self=True) == [dense]
