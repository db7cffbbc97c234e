"""Pins the Keras optimizer internals that `_keras_internals.optimizers` relies on.

Each test names the function (or hook) whose reliance it pins; a Keras release
that moves one of them fails here first.
"""

import keras
import numpy as np
import pytest
from testing_utils import dense_model, regression_data, values

from keras_transfer._keras_internals.optimizers import (
    GroupedUpdateOptimizer,
    configured_learning_rate,
    distribution_strategy,
    mapped_variables,
    set_configured_learning_rate,
    set_variable_mapping,
    unbuild,
    variable_key,
)


def kernels(model):
    """The kernels of layers a, b and head, in that order."""
    return [model.get_layer(name).kernel for name in ("a", "b", "head")]


def slots_by_path(optimizer):
    return {v.path: value for v, value in zip(optimizer.variables, values(optimizer.variables))}


def as_float(value):
    return float(keras.ops.convert_to_numpy(value))


# --- variable_key, mapped_variables, set_variable_mapping -----------------------


def test_variable_key_is_stable_and_distinct_per_variable():
    a, b, head = kernels(dense_model())
    optimizer = keras.optimizers.SGD()
    keys = [variable_key(optimizer, v) for v in (a, b, head)]
    assert len(set(keys)) == 3
    assert variable_key(optimizer, a) == keys[0]
    if keras.backend.backend() == "tensorflow":
        # The key of the backing tf.Variable: what a tf.distribute replica sees.
        assert variable_key(optimizer, a.value) == keys[0]


def test_variable_key_is_the_key_of_weight_decay_exclusions():
    # `exclude_from_weight_decay(var_list=...)` stores `_var_key`s: the same keys.
    a, b, _ = kernels(dense_model())
    optimizer = keras.optimizers.SGD(0.1, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_list=[a])
    optimizer.build([a, b])
    before = values([a, b])
    optimizer.apply([keras.ops.zeros(a.shape), keras.ops.zeros(b.shape)], [a, b])
    after = values([a, b])
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_allclose(after[1], before[1] * (1 - 0.5 * 0.1), rtol=1e-6)


def test_mapped_variables_are_the_build_list_in_order():
    variables = kernels(dense_model())
    optimizer = keras.optimizers.Adam()
    assert mapped_variables(optimizer) == []
    optimizer.build(variables)
    assert [id(v) for v in mapped_variables(optimizer)] == [id(v) for v in variables]
    mapped_variables(optimizer).clear()  # a copy: the optimizer's mapping is untouched
    assert len(mapped_variables(optimizer)) == 3


def test_a_mapping_to_a_subset_updates_only_its_slots():
    a, b, head = kernels(dense_model())
    optimizer = keras.optimizers.SGD(0.1, momentum=0.5)
    optimizer.build([a, b, head])
    slots_before = list(optimizer.variables)
    set_variable_mapping(optimizer, [head], {variable_key(optimizer, head): 2})
    assert optimizer.variables == slots_before
    assert [id(v) for v in mapped_variables(optimizer)] == [id(head)]
    head_before = values([head])[0]
    optimizer.apply([keras.ops.ones(head.shape)])  # no variables given: the mapped ones
    np.testing.assert_allclose(values([head])[0], head_before - 0.1, rtol=1e-6)
    momentums = slots_by_path(optimizer)
    np.testing.assert_allclose(momentums["sgd/head_kernel_momentum"], -0.1, rtol=1e-6)
    assert not momentums["sgd/a_kernel_momentum"].any()
    assert not momentums["sgd/b_kernel_momentum"].any()


def test_a_mapping_never_makes_model_variables_optimizer_state():
    variables = kernels(dense_model())
    optimizer = keras.optimizers.Adam()
    optimizer.build(variables)
    count = len(optimizer.variables)
    keys = {variable_key(optimizer, v): i for i, v in enumerate(variables)}
    set_variable_mapping(optimizer, variables[1:], {k: i for k, i in keys.items() if i})
    assert len(optimizer.variables) == count
    assert not {id(v) for v in variables} & {id(v) for v in optimizer.variables}


def test_stateless_apply_takes_one_gradient_per_mapped_variable():
    if keras.backend.backend() == "tensorflow":
        pytest.skip("Keras has no stateless_apply on TensorFlow")
    a, b, head = kernels(dense_model())
    optimizer = keras.optimizers.Adam(0.1)
    optimizer.build([a, b, head])
    set_variable_mapping(optimizer, [head], {variable_key(optimizer, head): 2})
    before = values([head])[0]
    new_values, new_slots = optimizer.stateless_apply(
        [v.value for v in optimizer.variables], [keras.ops.ones(head.shape)], [head.value]
    )
    assert len(new_values) == 1
    assert len(new_slots) == len(optimizer.variables)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(new_values[0]), before - 0.1, atol=1e-5)


# --- unbuild ---------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.1, "schedule"])
def test_unbuild_keeps_the_step_count_and_rate_and_lets_build_run_again(rate):
    a, b, head = kernels(dense_model())
    if rate == "schedule":
        rate = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    optimizer = keras.optimizers.Adam(rate)
    optimizer.build([head])
    optimizer.apply([keras.ops.ones(head.shape)])
    kept = [v for v in optimizer.variables if "kernel" not in v.path]
    assert len(kept) == (2 if isinstance(rate, float) else 1)

    unbuild(optimizer)
    assert not optimizer.built
    assert [id(v) for v in optimizer.variables] == [id(v) for v in kept]
    assert mapped_variables(optimizer) == []

    optimizer.build([a, b, head])
    assert len(optimizer.variables) == len(kept) + 2 * 3
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 1
    optimizer.apply([keras.ops.ones(v.shape) for v in (a, b, head)])
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 2


# --- configured_learning_rate, set_configured_learning_rate ----------------------


def test_configured_learning_rate_is_the_variable_or_the_schedule():
    optimizer = keras.optimizers.SGD(0.25)
    variable = configured_learning_rate(optimizer)
    assert isinstance(variable, keras.Variable)
    assert any(v is variable for v in optimizer.variables)
    assert as_float(variable) == 0.25
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    assert configured_learning_rate(keras.optimizers.SGD(schedule)) is schedule


def test_a_variable_in_place_of_a_schedule_is_state_and_sets_the_rate():
    model = dense_model()
    head = model.get_layer("head").kernel
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 1, 0.5)
    optimizer = keras.optimizers.SGD(schedule)
    optimizer.build([head])
    count = len(optimizer.variables)

    rate = keras.Variable(0.0, name="learning_rate", trainable=False)
    set_configured_learning_rate(optimizer, rate)
    assert configured_learning_rate(optimizer) is rate
    assert any(v is rate for v in optimizer.variables)
    optimizer.learning_rate = 0.5  # the public setter now works
    assert as_float(rate) == 0.5
    before = values([head])[0]
    optimizer.apply([keras.ops.ones(head.shape)])
    np.testing.assert_allclose(values([head])[0], before - 0.5, rtol=1e-6)

    set_configured_learning_rate(optimizer, schedule)
    assert configured_learning_rate(optimizer) is schedule
    assert len(optimizer.variables) == count
    assert not any(v is rate for v in optimizer.variables)
    assert as_float(optimizer.learning_rate) == pytest.approx(0.1 * 0.5)  # schedule(1)


def test_a_new_rate_variable_replaces_the_old_one_in_the_state():
    optimizer = keras.optimizers.SGD(0.1)
    old = configured_learning_rate(optimizer)
    new = keras.Variable(0.2, name="learning_rate", trainable=False)
    set_configured_learning_rate(optimizer, new)
    assert any(v is new for v in optimizer.variables)
    assert not any(v is old for v in optimizer.variables)
    assert as_float(optimizer.learning_rate) == pytest.approx(0.2)


# --- distribution_strategy -------------------------------------------------------


def test_distribution_strategy_is_the_one_the_optimizer_was_made_under():
    if keras.backend.backend() != "tensorflow":
        assert distribution_strategy(keras.optimizers.SGD()) is None
        return
    import tensorflow as tf

    assert distribution_strategy(keras.optimizers.SGD()) is tf.distribute.get_strategy()
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        optimizer = keras.optimizers.SGD()
    assert distribution_strategy(optimizer) is strategy


# --- GroupedUpdateOptimizer -------------------------------------------------------


class ByPath(GroupedUpdateOptimizer):
    """A grouped optimizer whose multipliers are given by variable path."""

    def __init__(self, inner, multipliers, learning_rate=0.1, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.inner_optimizer = inner
        self.multipliers = multipliers

    def build(self, var_list):
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    def multiplier_for(self, variable):
        return self.multipliers.get(variable.path, 1.0)


MULTIPLIERS = {"a/kernel": 0.25, "b/kernel": 0.5}


def test_each_group_steps_at_its_multiple_of_the_rate():
    variables = kernels(dense_model())
    optimizer = ByPath(keras.optimizers.SGD(), MULTIPLIERS, learning_rate=0.1)
    before = values(variables)
    optimizer.apply([keras.ops.ones(v.shape) for v in variables], variables)
    for variable, start, after in zip(variables, before, values(variables)):
        multiplier = MULTIPLIERS.get(variable.path, 1.0)
        np.testing.assert_allclose(after, start - 0.1 * multiplier, rtol=1e-6, atol=1e-7)


def test_the_wrapped_update_rule_counts_its_own_steps():
    # Adam's bias correction reads the wrapped optimizer's `iterations`: with
    # multiplier 1 the grouped Adam is Adam, step for step.
    grouped_model, plain_model = dense_model(), dense_model()
    plain_model.set_weights(grouped_model.get_weights())
    grouped_variables, plain_variables = kernels(grouped_model), kernels(plain_model)
    inner = keras.optimizers.Adam(0.01)
    grouped = ByPath(inner, {}, learning_rate=0.01)
    plain = keras.optimizers.Adam(0.01)
    rng = np.random.default_rng(0)
    for _ in range(3):
        grads = [rng.normal(size=v.shape).astype("float32") for v in grouped_variables]
        grouped.apply([keras.ops.convert_to_tensor(g) for g in grads], grouped_variables)
        plain.apply([keras.ops.convert_to_tensor(g) for g in grads], plain_variables)
    assert int(keras.ops.convert_to_numpy(inner.iterations)) == 3
    assert int(keras.ops.convert_to_numpy(grouped.iterations)) == 3
    for got, expected in zip(values(grouped_variables), values(plain_variables)):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_weight_decay_comes_first_and_is_scaled_per_group():
    variables = kernels(dense_model())
    optimizer = ByPath(keras.optimizers.SGD(), MULTIPLIERS, learning_rate=0.1, weight_decay=0.2)
    grads = [np.full(v.shape, 0.3, "float32") for v in variables]
    before = values(variables)
    optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    for variable, start, grad, after in zip(variables, before, grads, values(variables)):
        rate = 0.1 * MULTIPLIERS.get(variable.path, 1.0)
        expected = (start - start * 0.2 * rate) - rate * grad  # decay, then the step
        np.testing.assert_allclose(after, expected, rtol=1e-6, atol=1e-7)
    assert optimizer.weight_decay == pytest.approx(0.2)  # the configured decay, unscaled


def test_a_variable_decays_only_if_both_optimizers_would_decay_it():
    model = dense_model()
    variables = [model.get_layer("head").kernel, model.get_layer("head").bias]
    inner = keras.optimizers.SGD()
    inner.exclude_from_weight_decay(var_names=["bias"])
    optimizer = ByPath(inner, {}, learning_rate=0.1, weight_decay=0.5)
    model.get_layer("head").bias.assign(np.ones(1, "float32"))
    before = values(variables)
    optimizer.apply([keras.ops.zeros(v.shape) for v in variables], variables)
    kernel, bias = values(variables)
    np.testing.assert_allclose(kernel, before[0] * (1 - 0.5 * 0.1), rtol=1e-6)
    np.testing.assert_array_equal(bias, before[1])


def test_variables_are_its_own_then_the_wrapped_ones():
    variables = kernels(dense_model())
    inner = keras.optimizers.Adam()
    optimizer = ByPath(inner, MULTIPLIERS)
    optimizer.build(variables)
    own = [optimizer.iterations, configured_learning_rate(optimizer)]
    assert [id(v) for v in optimizer.variables] == [id(v) for v in own + inner.variables]


def test_inside_a_compiled_fit_each_group_steps_at_its_multiple():
    x, y = regression_data()
    grouped_model, plain_model = dense_model(), dense_model()
    plain_model.set_weights(grouped_model.get_weights())
    start = values(kernels(grouped_model))
    plain_model.compile(keras.optimizers.SGD(0.01), "mse")
    plain_model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    multipliers = {"head/kernel": 0.5, "head/bias": 0.5}
    grouped_model.compile(ByPath(keras.optimizers.SGD(), multipliers, learning_rate=0.01), "mse")
    grouped_model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    for variable, s0, p1, g1 in zip(
        kernels(grouped_model), start, values(kernels(plain_model)), values(kernels(grouped_model))
    ):
        multiplier = multipliers.get(variable.path, 1.0)
        np.testing.assert_allclose(g1 - s0, multiplier * (p1 - s0), rtol=1e-5, atol=1e-7)
