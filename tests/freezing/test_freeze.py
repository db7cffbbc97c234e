import keras
import numpy as np
import pytest
from testing_utils import dense_model, regression_data, values

import keras_transfer as kt


def trainable_flags(model):
    return {layer.name: layer.trainable for layer in model.layers if layer.weights}


def test_freeze_keeps_only_the_top_groups_trainable():
    model = dense_model()
    kt.freeze(model, trainable_groups=2)
    assert trainable_flags(model) == {"a": False, "b": True, "head": True}
    assert [v.path for v in model.trainable_weights] == [
        "b/kernel",
        "b/bias",
        "head/kernel",
        "head/bias",
    ]


def test_unfreeze_undoes_a_frozen_backbone():
    model = dense_model()
    model.trainable = False
    kt.unfreeze(model)
    assert all(trainable_flags(model).values())


def test_batchnorm_stays_frozen_in_unfrozen_groups_by_default():
    model = dense_model(with_batchnorm=True)
    kt.unfreeze(model)
    assert not model.get_layer("bn").trainable
    assert model.get_layer("a").trainable
    kt.unfreeze(model, freeze_batchnorm=False)
    assert model.get_layer("bn").trainable


def test_frozen_batchnorm_runs_in_inference_mode():
    model = dense_model(with_batchnorm=True)
    kt.unfreeze(model)
    x, y = regression_data()
    model.compile(keras.optimizers.SGD(0.01), "mse")
    moving_stats = values(model.get_layer("bn").non_trainable_weights)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for before, after in zip(moving_stats, values(model.get_layer("bn").non_trainable_weights)):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("count", [0, 4, -1])
def test_group_count_out_of_range_says_what_is_allowed(count):
    with pytest.raises(ValueError, match="3 layer group.*from 1 to 3"):
        kt.freeze(dense_model(), trainable_groups=count)


@pytest.mark.parametrize("count", ["some", 1.5, True])
def test_group_count_of_the_wrong_type(count):
    with pytest.raises(TypeError, match="positive integer or 'all'"):
        kt.freeze(dense_model(), trainable_groups=count)


def test_freeze_leaving_only_frozen_batchnorm_is_an_error():
    model = dense_model(with_batchnorm=True)
    groups = [
        kt.LayerGroup(
            "body", [model.get_layer("a"), model.get_layer("b"), model.get_layer("head")]
        ),
        kt.LayerGroup("norm", [model.get_layer("bn")]),
    ]
    with pytest.raises(ValueError, match="no trainable weights.*freeze_batchnorm=False"):
        kt.freeze(model, trainable_groups=1, groups=groups)


def test_unfreezing_between_two_fits_keeps_optimizer_state():
    """Train the head, unfreeze, train on: no recompile, no lost slots."""
    model = dense_model()
    x, y = regression_data()
    kt.freeze(model, trainable_groups=1)
    optimizer = keras.optimizers.Adam(0.01)
    model.compile(optimizer, "mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert len(optimizer.variables) == 2 + 2 * 2  # iterations, lr, m and v of head
    head_slots = {
        v.path: value for v, value in zip(optimizer.variables, values(optimizer.variables))
    }

    body_before = values(model.get_layer("a").weights)
    kt.unfreeze(model)
    assert len(optimizer.variables) == 2 + 2 * 6
    for variable, value in zip(optimizer.variables, values(optimizer.variables)):
        if variable.path in head_slots:
            np.testing.assert_array_equal(value, head_slots[variable.path])
        elif "iteration" not in variable.path:
            assert not value.any(), f"{variable.path} should start from zero"
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 4

    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for before, after in zip(body_before, values(model.get_layer("a").weights)):
        assert not np.array_equal(before, after)
