import keras
import numpy as np
import pytest
from testing_utils import branchy_data, branchy_model, dense_model, regression_data, values

import keras_transfer as kt

# With decay 2 over the groups a, b, head.
MULTIPLIERS = {"a": 0.25, "b": 0.5, "head": 1.0}


def train_steps(model, optimizer, steps=1, data=None):
    x, y = data if data is not None else branchy_data()
    model.compile(optimizer, "mse")
    for _ in range(steps):
        model.train_on_batch(x, y)


def branch_weights(model):
    return {name: values(model.get_layer(name).weights) for name in MULTIPLIERS}


def assert_each_group_follows_its_scaled_reference(make_optimizer, steps, data=None, rtol=1e-5):
    """`make_optimizer(rate_scale)`: the optimizer with its rate scaled."""
    model = branchy_model()
    initial, initial_weights = model.get_weights(), branch_weights(model)
    train_steps(model, kt.DiscriminativeLR(make_optimizer(1.0), model, decay=2.0), steps, data)
    got = branch_weights(model)
    for name, multiplier in MULTIPLIERS.items():
        reference = branchy_model()
        reference.set_weights(initial)
        train_steps(reference, make_optimizer(multiplier), steps, data)
        for start, expected, actual in zip(
            initial_weights[name], branch_weights(reference)[name], got[name]
        ):
            assert not np.allclose(start, expected), "the reference did not train"
            np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-7)


def test_one_sgd_step_moves_each_variable_exactly_multiplier_times_as_far():
    scaled, plain = branchy_model(), branchy_model()
    plain.set_weights(scaled.get_weights())
    start = branch_weights(scaled)
    train_steps(plain, keras.optimizers.SGD(0.05))
    train_steps(scaled, kt.DiscriminativeLR(keras.optimizers.SGD(0.05), scaled, decay=2.0))
    for name, multiplier in MULTIPLIERS.items():
        for s0, p1, s1 in zip(
            start[name], branch_weights(plain)[name], branch_weights(scaled)[name]
        ):
            np.testing.assert_allclose(s1 - s0, multiplier * (p1 - s0), rtol=1e-5, atol=1e-7)


def excluding_biases(optimizer):
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    return optimizer


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda m: keras.optimizers.SGD(0.05 * m, momentum=0.9),
        lambda m: keras.optimizers.SGD(0.05 * m, weight_decay=0.1),
        lambda m: keras.optimizers.SGD(0.05 * m, gradient_accumulation_steps=2),
        lambda m: keras.optimizers.Adam(0.01 * m),
        lambda m: keras.optimizers.AdamW(0.01 * m, weight_decay=0.05),
        lambda m: excluding_biases(keras.optimizers.AdamW(0.01 * m, weight_decay=0.5)),
        lambda m: keras.optimizers.Lion(0.001 * m),
        lambda m: keras.optimizers.RMSprop(0.01 * m),
    ],
    ids=[
        "sgd_momentum",
        "sgd_weight_decay",
        "sgd_accumulation",
        "adam",
        "adamw",
        "adamw_excluding_biases",
        "lion",
        "rmsprop",
    ],
)
def test_each_group_trains_as_its_optimizer_at_the_scaled_rate(make_optimizer):
    # Weight decay is scaled with the rate, as in PyTorch parameter groups.
    assert_each_group_follows_its_scaled_reference(make_optimizer, steps=4)


def test_learning_rate_schedule_is_shared_by_all_groups():
    def make_optimizer(multiplier):
        schedule = keras.optimizers.schedules.ExponentialDecay(
            0.1 * multiplier, decay_steps=1, decay_rate=0.5
        )
        return keras.optimizers.SGD(schedule)

    assert_each_group_follows_its_scaled_reference(make_optimizer, steps=3)
    model = branchy_model()
    optimizer = kt.DiscriminativeLR(make_optimizer(1.0), model)
    train_steps(model, optimizer, steps=3)
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(0.0125)


def test_mixed_precision_wraps_it_in_loss_scaling():
    keras.config.set_dtype_policy("mixed_float16")
    assert_each_group_follows_its_scaled_reference(
        lambda m: keras.optimizers.SGD(0.05 * m), steps=2, data=branchy_data(scale=0.1), rtol=1e-3
    )
    model = branchy_model()
    optimizer = kt.DiscriminativeLR(keras.optimizers.SGD(0.05), model)
    train_steps(model, optimizer, data=branchy_data(scale=0.1))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.optimizer.inner_optimizer is optimizer


def test_learning_rate_callbacks_set_the_top_rate():
    model = branchy_model()
    optimizer = kt.DiscriminativeLR(keras.optimizers.SGD(0.1), model, decay=2.0)
    x, y = branchy_data()
    model.compile(optimizer, "mse")
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch: 0.01 * (epoch + 1))
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[scheduler])
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(0.02)

    plain = branchy_model()
    plain.set_weights(model.get_weights())
    start = branch_weights(model)
    optimizer.learning_rate = 0.2
    model.train_on_batch(x, y)
    train_steps(plain, keras.optimizers.SGD(0.2))
    for name, multiplier in MULTIPLIERS.items():
        for s0, p1, s1 in zip(
            start[name], branch_weights(plain)[name], branch_weights(model)[name]
        ):
            np.testing.assert_allclose(s1 - s0, multiplier * (p1 - s0), rtol=1e-5, atol=1e-7)


def test_multipliers_by_group_index_and_by_regex():
    model = dense_model()
    optimizer = kt.DiscriminativeLR(
        keras.optimizers.SGD(0.1), model, multipliers={0: 0.1, "b/": 0.3}
    )
    optimizer.build(model.trainable_variables)
    assert optimizer.variable_multipliers == {
        "a/kernel": 0.1,
        "a/bias": 0.1,
        "b/kernel": 0.3,
        "b/bias": 0.3,
        "head/kernel": 1.0,
        "head/bias": 1.0,
    }
    negative = kt.DiscriminativeLR(keras.optimizers.SGD(0.1), model, multipliers={-1: 2.0})
    negative.build(model.trainable_variables)
    assert negative.multiplier_for(model.get_layer("head").kernel) == 2.0
    assert negative.multiplier_for(model.get_layer("a").kernel) == 1.0


def test_default_decay_is_ulmfits():
    model = dense_model()
    optimizer = kt.DiscriminativeLR(keras.optimizers.SGD(0.1), model)
    optimizer.build(model.trainable_variables)
    assert optimizer.multiplier_for(model.get_layer("a").kernel) == pytest.approx(2.6**-2)


def test_save_and_load_restores_multipliers_and_state(tmp_path):
    model = dense_model()
    optimizer = kt.DiscriminativeLR(keras.optimizers.Adam(0.01), model, decay=2.0)
    train_steps(model, optimizer, steps=2)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded.optimizer, kt.DiscriminativeLR)
    assert loaded.optimizer.variable_multipliers == optimizer.variable_multipliers
    assert isinstance(loaded.optimizer.inner_optimizer, keras.optimizers.Adam)
    for a, b in zip(values(optimizer.variables), values(loaded.optimizer.variables)):
        np.testing.assert_array_equal(a, b)
    # Both continue identically.
    x, y = regression_data()
    model.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    for a, b in zip(values(model.weights), values(loaded.weights)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_config_round_trip_keeps_taken_over_settings():
    model = dense_model()
    optimizer = kt.DiscriminativeLR(
        keras.optimizers.AdamW(0.01, weight_decay=0.05, clipnorm=1.0), model, decay=3.0
    )
    optimizer.build(model.trainable_variables)
    assert optimizer.inner_optimizer.weight_decay is None  # applied group by group instead
    restored = kt.DiscriminativeLR.from_config(optimizer.get_config())
    assert restored.weight_decay == 0.05
    assert restored.clipnorm == 1.0
    assert restored.decay == 3.0
    assert restored.variable_multipliers == optimizer.variable_multipliers


def test_composes_with_freeze_schedule():
    model = dense_model()
    x, y = regression_data()
    optimizer = kt.DiscriminativeLR(keras.optimizers.SGD(0.05), model, decay=2.0)
    model.compile(optimizer, "mse")
    schedule = kt.FreezeSchedule(model, {0: 1, 1: "all"}, verbose=0)
    before = branch_weights(model)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[schedule])
    after_0 = branch_weights(model)
    for b, a in zip(before["a"], after_0["a"]):
        np.testing.assert_array_equal(b, a)
    model.fit(x, y, epochs=2, initial_epoch=1, batch_size=32, verbose=0, callbacks=[schedule])
    assert optimizer.multiplier_for(model.get_layer("a").kernel) == 0.25
    assert not np.array_equal(after_0["a"][0], values(model.get_layer("a").weights)[0])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"decay": 0}, ValueError, "number > 0"),
        ({"decay": -2.6}, ValueError, "number > 0"),
        ({"decay": 2.0, "multipliers": {0: 1.0}}, ValueError, "either `decay` or"),
        ({"multipliers": {0: -1.0}}, ValueError, ">= 0"),
        ({"multipliers": []}, TypeError, "non-empty dict"),
        ({"multipliers": {"(": 1.0}}, ValueError, "Invalid multiplier regex"),
        ({"momentum": 0.9}, TypeError, "Unknown arguments"),
    ],
)
def test_bad_arguments_are_explained(kwargs, error, message):
    with pytest.raises(error, match=message):
        kt.DiscriminativeLR(keras.optimizers.SGD(0.1), dense_model(), **kwargs)


def test_multiplier_keys_that_match_nothing_are_errors():
    model = dense_model()
    optimizer = kt.DiscriminativeLR(keras.optimizers.SGD(0.1), model, multipliers={7: 0.1})
    with pytest.raises(ValueError, match="index 7 is out of range.*0: a"):
        optimizer.build(model.trainable_variables)
    optimizer = kt.DiscriminativeLR(keras.optimizers.SGD(0.1), model, multipliers={"conv": 0.1})
    with pytest.raises(ValueError, match="'conv' matches no variable path"):
        optimizer.build(model.trainable_variables)


def test_what_it_cannot_wrap():
    with pytest.raises(TypeError, match="wraps a Keras optimizer"):
        kt.DiscriminativeLR(object(), dense_model())
    with pytest.raises(ValueError, match="Wrap the plain optimizer"):
        kt.DiscriminativeLR(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()))
    built = keras.optimizers.SGD()
    built.build(dense_model().trainable_variables)
    with pytest.raises(ValueError, match="already built"):
        kt.DiscriminativeLR(built, dense_model())


def test_without_a_model_it_says_to_pass_one():
    model = dense_model()
    optimizer = kt.DiscriminativeLR("sgd")
    with pytest.raises(ValueError, match="needs the model"):
        optimizer.build(model.trainable_variables)


def test_model_without_trainable_weights_is_refused():
    model = dense_model()
    model.trainable = False
    x, y = regression_data()
    model.compile(kt.DiscriminativeLR(keras.optimizers.SGD(0.1), model), "mse")
    if keras.backend.backend() == "tensorflow":
        # Keras' TensorFlow trainer never builds the optimizer then; it warns.
        with pytest.warns(UserWarning, match="does not have any trainable weights"):
            model.fit(x, y, verbose=0)
        return
    with pytest.raises(ValueError, match="no trainable variables.*kt.unfreeze"):
        model.fit(x, y, verbose=0)
