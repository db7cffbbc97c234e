"""`trainable_set`: an optimizer that follows a trainable set changing mid-fit.

The Keras internals it relies on are pinned in
`tests/_keras_internals/test_optimizers.py`.
"""

import keras
import numpy as np
import pytest
from testing_utils import dense_model, regression_data, values

from keras_transfer._keras_internals.optimizers import mapped_variables
from keras_transfer.freezing.trainable_set import (
    follow_trainable,
    optimizer_chain,
    track_variables,
)


def head_and_body(model):
    head = model.get_layer("head").trainable_weights
    body = model.get_layer("a").trainable_weights + model.get_layer("b").trainable_weights
    return head, body


def test_extending_keeps_known_slots_and_iterations():
    model = dense_model()
    head, body = head_and_body(model)
    optimizer = keras.optimizers.Adam(0.1)
    optimizer.build(head)
    optimizer.apply([keras.ops.ones(v.shape) for v in head], head)
    known = {v.path: value for v, value in zip(optimizer.variables, values(optimizer.variables))}

    track_variables(optimizer, body + head)
    assert len(optimizer.variables) == 2 + 2 * len(body + head)
    for variable, value in zip(optimizer.variables, values(optimizer.variables)):
        if variable.path in known:
            np.testing.assert_array_equal(value, known[variable.path])
        else:
            assert not value.any()
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 1


def test_following_a_subset_maps_it_to_the_original_slots():
    model = dense_model()
    head, body = head_and_body(model)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.5)
    track_variables(optimizer, body + head)
    slots_before = list(optimizer.variables)
    follow_trainable(optimizer, head)
    assert optimizer.variables == slots_before  # slot positions never move
    assert len(mapped_variables(optimizer)) == len(head)
    optimizer.apply([keras.ops.ones(v.shape) for v in head])  # grads for the subset only
    momentums = {
        v.path: value for v, value in zip(optimizer.variables, values(optimizer.variables))
    }
    assert momentums["sgd/head_kernel_momentum"].any()
    assert not momentums["sgd/a_kernel_momentum"].any()


def test_stateless_apply_takes_gradients_for_the_subset():
    if keras.backend.backend() == "tensorflow":
        pytest.skip("Keras has no stateless_apply on TensorFlow")
    model = dense_model()
    head, body = head_and_body(model)
    optimizer = keras.optimizers.Adam(0.1)
    track_variables(optimizer, body + head)
    follow_trainable(optimizer, head)
    new_values, new_slots = optimizer.stateless_apply(
        [v.value for v in optimizer.variables],
        [keras.ops.ones(v.shape) for v in head],
        [v.value for v in head],
    )
    assert len(new_values) == len(head)
    assert len(new_slots) == len(optimizer.variables)


def test_model_variables_never_become_optimizer_state():
    model = dense_model()
    optimizer = keras.optimizers.Adam()
    model.compile(optimizer, "mse")
    track_variables(optimizer, model.trainable_variables)
    follow_trainable(optimizer, model.trainable_variables[-2:])
    model_ids = {id(v) for v in model.weights}
    assert not any(id(v) in model_ids for v in optimizer.variables)


def test_loss_scale_optimizer_chain_follows_too():
    model = dense_model()
    head, body = head_and_body(model)
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
    assert optimizer_chain(optimizer)[-1] is optimizer.inner_optimizer
    track_variables(optimizer, body + head)
    follow_trainable(optimizer, head)
    for member in optimizer_chain(optimizer):
        assert len(mapped_variables(member)) == len(head)


def test_unknown_variables_must_be_tracked_first():
    model = dense_model()
    head, body = head_and_body(model)
    optimizer = keras.optimizers.SGD()
    track_variables(optimizer, head)
    with pytest.raises(ValueError, match="no slots for.*track_variables"):
        follow_trainable(optimizer, body)


def test_a_fit_after_following_trains_only_the_subset():
    model = dense_model()
    x, y = regression_data()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(x, y, verbose=0)
    model.get_layer("a").trainable = False
    body_before = values(model.get_layer("a").weights)
    track_variables(model.optimizer, model.weights)
    follow_trainable(model.optimizer, model.trainable_variables)
    model.make_train_function(force=True)
    model.fit(x, y, verbose=0)
    for before, after in zip(body_before, values(model.get_layer("a").weights)):
        np.testing.assert_array_equal(before, after)
