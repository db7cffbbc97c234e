import math

import keras
import numpy as np
import pytest
from testing_utils import values
from weight_averaging.soup_testing import (
    TwoDense,
    bn_model,
    counting_model,
    inputs,
    interpolation,
    randomize,
    relu_dense,
)

import keras_transfer as kt

EXPORTING = keras.backend.backend() in ("tensorflow", "jax")


def start_and_fine_tuned(builder=counting_model):
    return randomize(builder(), seed=1), randomize(builder(), seed=2)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_every_weight_is_the_numpy_interpolation(alpha):
    start, fine_tuned = start_and_fine_tuned()
    before = values(start.weights) + values(fine_tuned.weights)
    result = kt.wise_ft(start, fine_tuned, alpha=alpha)
    for got, first, last, variable in zip(
        result.get_weights(), start.get_weights(), fine_tuned.get_weights(), result.weights
    ):
        if variable.dtype == "int32":
            np.testing.assert_array_equal(got, last)  # copied from the fine-tuned model
        else:
            np.testing.assert_array_equal(got, interpolation(first, last, alpha))
            assert got.dtype == np.float32
    for old, new in zip(before, values(start.weights) + values(fine_tuned.weights)):
        np.testing.assert_array_equal(old, new)


def test_the_integer_counter_is_copied_from_the_fine_tuned_model():
    start, fine_tuned = start_and_fine_tuned()
    result = kt.wise_ft(start, fine_tuned, alpha=0.5)
    counters = [
        int(keras.ops.convert_to_numpy(m.get_layer("scale").counter))
        for m in (start, fine_tuned, result)
    ]
    assert counters == [1, 2, 2]


@pytest.mark.parametrize("alpha, source", [(0.0, 0), (1.0, 1)])
def test_the_end_points_give_the_start_and_fine_tuned_outputs(alpha, source):
    models = start_and_fine_tuned(bn_model)
    x = inputs(16)
    result = kt.wise_ft(*models, alpha=alpha)
    np.testing.assert_array_equal(result.predict_on_batch(x), models[source].predict_on_batch(x))
    other = models[1 - source].predict_on_batch(x)
    assert not np.allclose(result.predict_on_batch(x), other)


def test_the_result_is_a_new_uncompiled_model_with_the_fine_tuned_models_freezing():
    start, fine_tuned = start_and_fine_tuned()
    start.get_layer("a").trainable = False  # a linear probe: frozen body, trained head
    fine_tuned.compile(optimizer="adam", loss="mse")
    result = kt.wise_ft(start, fine_tuned)
    assert result is not fine_tuned and result is not start
    assert not result.compiled and getattr(result, "optimizer", None) is None
    assert result.get_layer("a").trainable
    assert set(map(id, result.weights)).isdisjoint(map(id, start.weights + fine_tuned.weights))
    fine_tuned.get_layer("a").trainable = False
    assert not kt.wise_ft(start, fine_tuned).get_layer("a").trainable


def test_a_model_compiled_with_a_custom_plan_optimizer_is_interpolated():
    # A DiscriminativeLR on LayerGroup objects has no config: the copy must
    # not need the fine-tuned model's compile settings.
    start, fine_tuned = start_and_fine_tuned()
    plan = kt.LayerGroupPlan(
        [
            kt.LayerGroup("body", [fine_tuned.get_layer("a"), fine_tuned.get_layer("scale")]),
            kt.LayerGroup("head", [fine_tuned.get_layer("head")]),
        ],
        fine_tuned,
    )
    fine_tuned.compile(kt.DiscriminativeLR(keras.optimizers.SGD(0.1), plan), loss="mse")
    with pytest.raises(ValueError, match="Only layer-name regex groups"):
        fine_tuned.get_compile_config()
    result = kt.wise_ft(start, fine_tuned, alpha=0.5)
    assert not result.compiled
    for got, start_value, end_value in zip(
        values(result.weights), values(start.weights), values(fine_tuned.weights)
    ):
        expected = (
            interpolation(start_value, end_value, 0.5) if got.dtype.kind == "f" else end_value
        )
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert fine_tuned.compiled


def test_models_built_twice_by_one_builder_match_despite_automatic_names():
    def builder():
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)])

    start, fine_tuned = builder(), builder()
    assert start.weights[0].path != fine_tuned.weights[0].path
    result = kt.wise_ft(start, fine_tuned, alpha=0.5)
    expected = [
        interpolation(a, b, 0.5) for a, b in zip(start.get_weights(), fine_tuned.get_weights())
    ]
    for got, want in zip(result.get_weights(), expected):
        np.testing.assert_array_equal(got, want)


def test_a_registered_subclassed_model_is_rebuilt():
    start, fine_tuned = TwoDense(), TwoDense()
    x = inputs(4, features=3)
    start(x), fine_tuned(x)
    result = kt.wise_ft(start, fine_tuned, alpha=0.25)
    assert isinstance(result, TwoDense)
    for got, a, b in zip(result.get_weights(), start.get_weights(), fine_tuned.get_weights()):
        np.testing.assert_array_equal(got, interpolation(a, b, 0.25))


def test_a_keras_hub_model_is_rebuilt():
    from testing_utils import tiny_bert

    start, fine_tuned = tiny_bert(num_layers=1), tiny_bert(num_layers=1)
    randomize(fine_tuned, seed=3, scale=0.1)
    result = kt.wise_ft(start, fine_tuned, alpha=0.5)
    assert type(result) is type(fine_tuned)
    for got, a, b in zip(result.get_weights(), start.get_weights(), fine_tuned.get_weights()):
        np.testing.assert_array_equal(got, interpolation(a, b, 0.5))


def test_different_architectures_are_refused_naming_the_first_mismatching_weight():
    with pytest.raises(
        ValueError, match=r"weight 0 is `a/kernel` \(\(5, 4\).*`a/kernel` \(\(5, 6\)"
    ):
        kt.wise_ft(counting_model(width=4), counting_model(width=6))


def test_a_model_with_an_extra_layer_is_refused_naming_the_weight_without_a_match():
    shorter = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="head")])
    longer = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, name="head"), keras.layers.Dense(2, name="extra")]
    )
    with pytest.raises(
        ValueError, match="weight 2, `[a-z_0-9/]*extra/kernel`, of `fine_tuned_model` has no"
    ):
        kt.wise_ft(shorter, longer)


def test_different_trainable_sets_are_refused_naming_the_first_mismatching_weight():
    with pytest.raises(
        ValueError,
        match=r"`scale/scale` \(\(4,\), float32, trainable\).*"
        r"non-trainable",
    ):
        kt.wise_ft(counting_model(trainable_scale=True), counting_model(trainable_scale=False))


@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan, math.inf])
def test_alpha_outside_zero_one_is_refused(alpha):
    with pytest.raises(ValueError, match=r"`alpha` must be a finite number in \[0, 1\]"):
        kt.wise_ft(*start_and_fine_tuned(), alpha=alpha)


@pytest.mark.parametrize("alpha", ["0.5", True, None])
def test_alpha_that_is_no_number_is_refused(alpha):
    with pytest.raises(TypeError, match="`alpha`"):
        kt.wise_ft(*start_and_fine_tuned(), alpha=alpha)


def test_bad_models_are_refused():
    model = counting_model()
    with pytest.raises(TypeError, match="`start_model` must be a `keras.Model`"):
        kt.wise_ft(model.get_weights(), model)
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="`fine_tuned_model` .* is not built"):
        kt.wise_ft(model, unbuilt)
    with pytest.raises(ValueError, match="`batch_size`"):
        kt.wise_ft(model, model, recalibrate_data=inputs(5, 5), batch_size=0)


def test_a_model_with_a_penalty_still_attached_is_refused_naming_remove():
    start, fine_tuned = start_and_fine_tuned()
    l2sp = kt.L2SP(fine_tuned)
    with pytest.raises(ValueError, match=r"L2SP penalty attached.*keras_transfer_l2sp.remove\(\)"):
        kt.wise_ft(start, fine_tuned)
    l2sp.remove()
    kt.wise_ft(start, fine_tuned)


def test_recalibration_measures_the_interpolated_models_statistics():
    start, fine_tuned = start_and_fine_tuned(bn_model)
    x = inputs(30)
    result = kt.wise_ft(start, fine_tuned, alpha=0.4, recalibrate_data=x, batch_size=8)
    kernel, bias = result.get_layer("a").get_weights()
    features = relu_dense(x, kernel, bias)
    bn = result.get_layer("bn")
    np.testing.assert_allclose(
        values([bn.moving_mean])[0], features.mean(axis=0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        values([bn.moving_variance])[0], features.var(axis=0), rtol=1e-5, atol=1e-6
    )
    interpolated = interpolation(
        start.get_layer("bn").get_weights()[0], fine_tuned.get_layer("bn").get_weights()[0], 0.4
    )
    np.testing.assert_array_equal(bn.get_weights()[0], interpolated)  # gamma: interpolated


def test_the_result_round_trips_through_a_keras_file(tmp_path):
    result = kt.wise_ft(*start_and_fine_tuned(), alpha=0.5)
    path = tmp_path / "wise.keras"
    result.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    for got, want in zip(loaded.get_weights(), result.get_weights()):
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not EXPORTING, reason="SavedModel export needs the TensorFlow or JAX backend")
def test_the_result_exports_as_a_saved_model(tmp_path):
    import tensorflow as tf

    start, fine_tuned = start_and_fine_tuned()
    result = kt.wise_ft(start, fine_tuned, alpha=0.5)
    path = kt.export_saved_model(result, str(tmp_path / "served"), class_names=["a", "b", "c"])
    x = inputs(4, features=5)
    loaded = tf.saved_model.load(path)  # keep it referenced: its variables live with it
    served = loaded.serving_default(inputs=tf.constant(x))
    logits = np.asarray(result.predict_on_batch(x), dtype=np.float64)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(served["probabilities"].numpy(), probabilities, rtol=1e-5, atol=1e-6)
    assert served["label"].numpy().tolist() == [
        ["a", "b", "c"][i].encode() for i in logits.argmax(axis=1)
    ]
