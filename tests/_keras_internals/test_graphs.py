"""Pins what `keras_transfer._keras_internals.graphs` relies on in Keras."""

import keras
import numpy as np

from keras_transfer._keras_internals.graphs import (
    is_plain_functional,
    keras_mask,
    run_functional_graph,
)


def nested_model():
    inner_inputs = {"a": keras.Input((3,), name="a"), "b": keras.Input((3,), name="b")}
    summed = keras.layers.Add(name="add")([inner_inputs["a"], inner_inputs["b"]])
    inner = keras.Model(inner_inputs, {"sum": summed, "scaled": summed * 2.0}, name="inner")
    inputs = {"a": keras.Input((3,), name="a"), "b": keras.Input((3,), name="b")}
    outputs = inner(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(outputs["sum"]), name="outer")


def test_is_plain_functional_tells_graph_models_from_subclassed_ones():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    assert is_plain_functional(nested_model())
    assert not is_plain_functional(keras.Sequential([keras.layers.Dense(1)]))
    assert not is_plain_functional(Subclassed())
    assert not is_plain_functional(keras.layers.Dense(1))


def test_run_functional_graph_computes_each_node_through_the_callback():
    model = nested_model()
    x = {"a": np.ones((2, 3), "float32"), "b": np.full((2, 3), 2.0, "float32")}
    seen = []

    def call(operation, args, kwargs):
        seen.append(operation.name)
        return operation(*args, **kwargs)

    inputs = [keras.ops.convert_to_tensor(x[t.name]) for t in model.inputs]
    outputs = run_functional_graph(model, inputs, call)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(outputs), keras.ops.convert_to_numpy(model(x)), rtol=1e-6
    )
    assert seen == ["inner", "head"]  # The nested model is one node of its own.
    inner = model.get_layer("inner")
    inner_outputs = run_functional_graph(inner, inputs, call)
    assert sorted(inner_outputs) == ["scaled", "sum"]  # In the model's output structure.


def test_keras_mask_reads_the_mask_a_layer_attaches():
    tokens = keras.Input((4,), dtype="int32")
    embedded = keras.layers.Embedding(5, 2, mask_zero=True)(tokens)
    assert keras_mask(embedded) is not None
    assert keras_mask(keras.layers.Dense(2)(keras.Input((3,)))) is None
