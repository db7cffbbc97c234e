import keras
import numpy as np
import pytest
import tensorflow as tf
from testing_utils import values
from weight_averaging.soup_testing import batch_norm, bn_model, inputs, randomize, relu_dense

from keras_transfer.weight_averaging._batch_norm_recalibration import (
    batch_norm_layers,
    recalibrate_batch_norm,
)


def moving_statistics(layer):
    return values([layer.moving_mean, layer.moving_variance])


def first_bn_features(model, x):
    kernel, bias = model.get_layer("a").get_weights()
    return relu_dense(x, kernel, bias)


def assert_statistics(layer, features):
    mean, variance = moving_statistics(layer)
    np.testing.assert_allclose(mean, features.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance, features.var(axis=0), rtol=1e-5, atol=1e-6)


def arrays_tuple_and_dataset(x):
    return {
        "arrays": x,
        "tuple": (x, np.zeros(len(x))),
        "dataset": tf.data.Dataset.from_tensor_slices(x).batch(7),
        "labelled dataset": tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x)))).batch(9),
    }


@pytest.mark.parametrize("form", ["arrays", "tuple", "dataset", "labelled dataset"])
def test_statistics_are_the_exact_mean_and_variance_of_the_features_entering_bn(form):
    model = randomize(bn_model(), seed=4)
    x = inputs(50)  # batches of 16 leave a short last batch
    recalibrate_batch_norm(model, arrays_tuple_and_dataset(x)[form], batch_size=16)
    assert_statistics(model.get_layer("bn"), first_bn_features(model, x))


def test_a_later_bn_sees_features_normalized_with_the_batch_statistics():
    model = randomize(bn_model(), seed=5)
    x = inputs(24)
    recalibrate_batch_norm(model, x, batch_size=24)  # one batch: batch statistics = moving ones
    first = model.get_layer("bn")
    mean, variance = moving_statistics(first)
    gamma, beta = values([first.gamma, first.beta])
    hidden = batch_norm(first_bn_features(model, x), mean, variance, gamma, beta)
    kernel, bias = model.get_layer("b").get_weights()
    assert_statistics(model.get_layer("bn_2"), relu_dense(hidden, kernel, bias))


def test_convolution_statistics_are_per_channel_over_batch_and_positions():
    model = keras.Sequential(
        [
            keras.Input((4, 4, 2)),
            keras.layers.Conv2D(3, 2, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
        ]
    )
    x = np.random.default_rng(1).normal(size=(10, 4, 4, 2)).astype("float32")
    recalibrate_batch_norm(model, x, batch_size=4)
    features = keras.ops.convert_to_numpy(model.get_layer("conv")(x)).astype(np.float64)
    features = features.reshape(-1, 3)
    assert_statistics(model.get_layer("bn"), features)


def test_frozen_bn_layers_are_recalibrated_and_stay_frozen_with_their_momentum():
    model = randomize(bn_model(), seed=6)
    model.get_layer("bn").trainable = False
    before = [(layer.momentum, layer.trainable) for layer in batch_norm_layers(model)]
    x = inputs(20)
    recalibrate_batch_norm(model, x, batch_size=8)
    assert [(layer.momentum, layer.trainable) for layer in batch_norm_layers(model)] == before
    assert before == [(0.99, False), (0.99, True)]
    assert_statistics(model.get_layer("bn"), first_bn_features(model, x))


def test_only_moving_statistics_change():
    model = randomize(bn_model(), seed=7)
    before = model.get_weights()
    recalibrate_batch_norm(model, inputs(20), batch_size=8)
    for variable, old, new in zip(model.weights, before, model.get_weights()):
        if "moving" in variable.path:
            assert not np.allclose(old, new)
        else:
            np.testing.assert_array_equal(old, new)


def test_bn_layers_are_found_inside_nested_models():
    inner = bn_model(name="inner")
    outer_input = keras.Input((6,))
    outer = keras.Model(outer_input, keras.layers.Dense(1, name="top")(inner(outer_input)))
    assert sorted(layer.name for layer in batch_norm_layers(outer)) == ["bn", "bn_2"]


def test_a_model_without_bn_warns_that_nothing_changes():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    with pytest.warns(UserWarning, match="no BatchNormalization layer"):
        recalibrate_batch_norm(model, inputs(4), batch_size=2)


def test_bad_data_is_refused_and_leaves_the_statistics_alone():
    model = randomize(bn_model(), seed=8)
    before = model.get_weights()
    with pytest.raises(ValueError, match="`recalibrate_data` is empty"):
        recalibrate_batch_norm(model, inputs(0), batch_size=4)
    with pytest.raises(ValueError, match="`batch_size`"):
        recalibrate_batch_norm(model, inputs(4), batch_size=0)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert [layer.momentum for layer in batch_norm_layers(model)] == [0.99, 0.99]


def test_batch_renormalization_is_refused():
    model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(renorm=True)])
    with pytest.raises(ValueError, match="batch renormalization"):
        recalibrate_batch_norm(model, inputs(4, features=3))
