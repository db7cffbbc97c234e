import keras
import numpy as np
import pytest
from testing_utils import values
from weight_averaging.soup_testing import (
    bn_model,
    counting_model,
    inputs,
    mean_of,
    randomize,
    relu_dense,
)

import keras_transfer as kt


def ingredients(count=3, builder=counting_model):
    return [randomize(builder(), seed=seed) for seed in range(1, count + 1)]


def test_every_weight_is_the_numpy_mean():
    models = ingredients()
    soup = kt.average_weights(models)
    per_model = [model.get_weights() for model in models]
    for index, (variable, got) in enumerate(zip(soup.weights, soup.get_weights())):
        column = [weights[index] for weights in per_model]
        if variable.dtype == "int32":
            np.testing.assert_array_equal(got, column[0])  # copied from models[0]
        else:
            np.testing.assert_array_equal(got, mean_of(column))
            np.testing.assert_allclose(got, np.mean(column, axis=0), rtol=1e-6, atol=1e-7)


def test_the_average_of_identical_models_is_the_model():
    model = randomize(bn_model(), seed=3)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    soup = kt.average_weights([model, copy, model])
    for got, want in zip(soup.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)
    x = inputs(8)
    np.testing.assert_array_equal(soup.predict_on_batch(x), model.predict_on_batch(x))


def test_the_models_are_left_unchanged():
    models = ingredients(builder=bn_model)
    before = [values(model.weights) for model in models]
    kt.average_weights(models, recalibrate_data=inputs(10))
    for model, old in zip(models, before):
        for a, b in zip(old, values(model.weights)):
            np.testing.assert_array_equal(a, b)


def test_recalibration_replaces_the_averaged_statistics_with_measured_ones():
    models = ingredients(builder=bn_model)
    x = inputs(35)
    plain = kt.average_weights(models)
    recalibrated = kt.average_weights(models, recalibrate_data=(x, None), batch_size=10)
    averaged_mean = mean_of([model.get_layer("bn").moving_mean.numpy() for model in models])
    np.testing.assert_array_equal(plain.get_layer("bn").moving_mean.numpy(), averaged_mean)
    kernel, bias = recalibrated.get_layer("a").get_weights()
    features = relu_dense(x, kernel, bias)
    bn = recalibrated.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), features.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), features.var(axis=0), rtol=1e-5, atol=1e-6
    )
    for name in ("a", "b", "head"):
        np.testing.assert_array_equal(
            recalibrated.get_layer(name).get_weights()[0], plain.get_layer(name).get_weights()[0]
        )


def test_mismatched_models_are_refused_naming_the_models_and_the_weight():
    models = [counting_model(), counting_model(), counting_model(width=3)]
    with pytest.raises(ValueError, match=r"`models\[0\]` and `models\[2\]` .* `a/kernel`"):
        kt.average_weights(models)


def test_one_model_is_refused_saying_what_to_do():
    with pytest.raises(ValueError, match="at least two models, got 1.*Fine-tune more copies"):
        kt.average_weights([counting_model()])


def test_a_model_instead_of_a_list_is_refused():
    with pytest.raises(TypeError, match=r"takes a list of models.*\[model_a, model_b"):
        kt.average_weights(counting_model())


def test_a_model_without_bn_warns_when_given_recalibration_data():
    models = ingredients()
    with pytest.warns(UserWarning, match="`recalibrate_data` changes nothing"):
        kt.average_weights(models, recalibrate_data=inputs(4, features=5))
