"""Pins what `keras_transfer._keras_internals.layers` relies on in Keras."""

import keras
import numpy as np
import pytest

from keras_transfer._keras_internals.layers import (
    attach_state,
    attached_state,
    build_at_init,
    call_outputs,
    delete_variable_attributes,
    detach_state,
    flatten_layers,
    lora_base_variable,
    own_weights,
    track_variable,
    trainable_capable_variables,
)


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


def test_track_variable_files_an_outside_variable_by_its_trainable_flag():
    layer = keras.layers.Layer()
    kernel = keras.Variable(np.ones(2), name="kernel")
    moving = keras.Variable(np.zeros(2), trainable=False, name="moving")
    track_variable(layer, kernel)
    track_variable(layer, moving)
    assert layer.trainable_weights == [kernel]
    assert layer.non_trainable_weights == [moving]
    frozen = keras.layers.Layer(trainable=False)
    variable = keras.Variable(1.0)
    track_variable(frozen, variable)
    assert frozen.weights == [variable] and variable.trainable is False


def test_build_at_init_builds_a_layer_without_build_and_locks_it():
    class Wrapper(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            track_variable(self, keras.Variable(np.ones(2), name="kernel"))
            build_at_init(self)

    layer = Wrapper()
    assert layer.built and len(layer.weights) == 1
    with pytest.raises(ValueError, match="already built"):
        layer.add_weight(shape=(1,), name="late")

    class WithBuild(keras.layers.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(1,), name="kernel")

    own_build = WithBuild()
    build_at_init(own_build)
    assert not own_build.built  # Left to Keras: the layer's own `build` runs on first call.


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


class StateHolder(keras.layers.Layer):
    """A layer outside any computation, with a weight, and a metric."""

    def __init__(self):
        super().__init__(name="holder")
        self.anchor = self.add_weight(shape=(2,), initializer="ones", trainable=False)
        self.built = True


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, inputs):
        return self.dense(inputs)


def built_models():
    inputs = keras.Input((3,))
    functional = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    called = keras.Sequential([keras.layers.Dense(2)])
    called(np.zeros((1, 3)))
    subclassed = Subclassed()
    subclassed(np.zeros((1, 3)))  # Built, so its state is locked.
    return [functional, sequential, called, subclassed]


@pytest.mark.parametrize("index", range(4))
def test_attach_state_adds_weights_and_a_metric_outside_the_computation(index, tmp_path):
    model = built_models()[index]
    weights, layers = list(model.weights), list(model.layers)
    holder, metric = StateHolder(), keras.metrics.Mean(name="extra")
    attach_state(model, "extra_state", holder)
    attach_state(model, "extra_metric", metric)
    assert attached_state(model) == {"extra_state": holder, "extra_metric": metric}
    assert set(map(id, weights)) < set(map(id, model.weights))
    assert holder.anchor in model.non_trainable_weights
    assert [m.name for m in model.metrics].count("extra") == 1
    if not isinstance(model, Subclassed):  # A subclassed model lists its attributes.
        assert model.layers == layers
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    # Saving finds the holder under its attribute name, and loading into a
    # model holding the same layer there restores it.
    path = str(tmp_path / "model.weights.h5")
    holder.anchor.assign([5.0, 6.0])
    model.save_weights(path)
    holder.anchor.assign([0.0, 0.0])
    model.load_weights(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(holder.anchor), [5.0, 6.0])
    detach_state(model, "extra_state", holder)
    detach_state(model, "extra_metric", metric)
    assert attached_state(model) == {}
    assert [id(v) for v in model.weights] == [id(v) for v in weights]
    assert "extra" not in [m.name for m in model.metrics]
    assert not hasattr(model, "extra_state")
    if isinstance(model, Subclassed):
        with pytest.raises(ValueError, match="already built"):
            model.late = keras.layers.Dense(1)  # Locked again.


def test_own_weights_leave_out_sublayers_and_keep_non_trainable_ones():
    holder = Holder()
    keras.Sequential([keras.Input((3,)), holder])
    assert own_weights(holder) == []
    norm = keras.layers.BatchNormalization()
    norm.build((None, 3))
    names = ["gamma", "beta", "moving_mean", "moving_variance"]
    assert [v.name for v in own_weights(norm)] == names


@pytest.mark.parametrize(
    "make_layer, shape, merged",
    [
        (lambda: keras.layers.Dense(3), (None, 4), "kernel"),
        (lambda: keras.layers.EinsumDense("ab,bc->ac", output_shape=3), (None, 4), "kernel"),
        (lambda: keras.layers.Conv1D(3, 2), (None, 5, 4), "kernel"),
        (lambda: keras.layers.Embedding(5, 3), (None, 2), "embeddings"),
    ],
)
def test_lora_base_variable_is_what_the_public_property_adds_the_update_to(
    make_layer, shape, merged
):
    layer = make_layer()
    layer.build(shape)
    layer.enable_lora(2)
    base = lora_base_variable(layer)
    assert isinstance(base, keras.Variable) and not base.trainable
    prefix = "lora_embeddings" if merged == "embeddings" else "lora_kernel"
    factor_a, factor_b = getattr(layer, f"{prefix}_a"), getattr(layer, f"{prefix}_b")
    factor_b.assign(np.ones(factor_b.shape, "float32"))
    update = keras.ops.convert_to_numpy(keras.ops.matmul(factor_a, factor_b))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(getattr(layer, merged)),
        keras.ops.convert_to_numpy(base) + update,
        rtol=1e-6,
    )


def test_delete_variable_attributes_untracks_as_del_does_without_a_collection_each(monkeypatch):
    deleted, reference = keras.layers.Dense(3), keras.layers.Dense(3)
    for layer in (deleted, reference):
        layer.build((None, 4))
        layer.enable_lora(2)
    collections = []
    monkeypatch.setattr("gc.collect", lambda *args: collections.append(args))
    delete_variable_attributes(deleted, ["lora_kernel_a", "lora_kernel_b"])
    assert collections == []
    del reference.lora_kernel_a
    del reference.lora_kernel_b
    assert len(collections) == 2  # Keras' own `del` collects after each variable.
    for layer in (deleted, reference):
        assert not hasattr(layer, "lora_kernel_a") and not hasattr(layer, "lora_kernel_b")
    paths = [[variable.path for variable in layer.weights] for layer in (deleted, reference)]
    assert [path.split("/")[-1] for path in paths[0]] == ["kernel", "bias"]
    assert [path.split("/")[-1] for path in paths[1]] == ["kernel", "bias"]
