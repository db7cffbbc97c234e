import keras
import numpy as np
import pytest
from weight_averaging.soup_testing import TwoDense, counting_model, inputs, randomize

from keras_transfer.weight_averaging._model_copy import fresh_copy


def test_a_copy_has_the_same_weights_and_outputs_but_its_own_variables():
    model = randomize(counting_model(), seed=1)
    model.compile(optimizer="adam", loss="mse")
    copy = fresh_copy(model, "model", model.get_weights())
    x = inputs(4, features=5)
    np.testing.assert_array_equal(copy.predict_on_batch(x), model.predict_on_batch(x))
    assert not copy.compiled
    assert set(map(id, copy.weights)).isdisjoint(map(id, model.weights))


def test_a_lambda_layer_is_copied_although_safe_mode_would_refuse_it_in_a_file():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Lambda(lambda t: 2.0 * t), keras.layers.Dense(2)]
    )
    x = inputs(2, features=3)
    np.testing.assert_allclose(
        fresh_copy(model, "model", model.get_weights()).predict_on_batch(x),
        model.predict_on_batch(x),
        rtol=1e-6,
    )


def test_a_config_that_forgets_an_argument_is_reported():
    @keras.saving.register_keras_serializable(package="test_model_copy")
    class Forgetful(TwoDense):
        def get_config(self):
            config = super().get_config()
            config.pop("units")
            return config

    model = Forgetful(units=7)
    model(inputs(2, features=3))
    with pytest.raises(ValueError, match="`models\\[0\\]` .* does not have the model.s weights"):
        fresh_copy(model, "models[0]", model.get_weights())


def test_an_unregistered_subclassed_model_is_reported_with_the_fix():
    class Unregistered(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Unregistered()
    model(inputs(2, features=3))
    with pytest.raises(ValueError, match="register_keras_serializable"):
        fresh_copy(model, "fine_tuned_model", model.get_weights())
