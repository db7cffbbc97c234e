import keras
import numpy as np
import pytest
import tensorflow as tf
from weight_averaging.soup_testing import (
    accuracy,
    bn_model,
    classification_data,
    inputs,
    linear_classifier,
    mean_of,
    randomize,
    relu_dense,
)

import keras_transfer as kt
from keras_transfer.weight_averaging.greedy_soup import GreedySoupInfo

TRUE_KERNEL = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")


def noisy(seed, noise=0.6, scale=1.0):
    rng = np.random.default_rng(seed)
    return linear_classifier(scale * TRUE_KERNEL + noise * rng.normal(size=TRUE_KERNEL.shape))


def candidates():
    """Four noisy estimates of the true classifier and one far off (index 1)."""
    models = [noisy(seed) for seed in (11, 12, 13, 14)]
    models.insert(1, noisy(15, noise=0.1, scale=-6.0))
    return models


def test_the_bad_model_is_left_out_and_the_soup_is_the_mean_of_the_kept_ones():
    models = candidates()
    x, y = classification_data(TRUE_KERNEL, samples=300)
    soup = kt.greedy_soup(models, (x, y), batch_size=64)
    info = soup.greedy_soup_info
    assert isinstance(info, GreedySoupInfo)
    assert 1 not in info.kept and info.order[-1] == 1
    own = [accuracy(model, x, y) for model in models]
    np.testing.assert_allclose(info.scores, own, atol=1e-6)
    assert list(info.order) == sorted(range(5), key=lambda i: -own[i])
    assert info.kept[0] == info.order[0]
    for got, *kept in zip(soup.get_weights(), *(models[i].get_weights() for i in info.kept)):
        np.testing.assert_array_equal(got, mean_of(kept))
    # Each model tried is kept exactly when its soup scored no worse than the soup before it.
    best = info.tried_scores[0]
    for index, score in zip(info.order[1:], info.tried_scores[1:]):
        assert (index in info.kept) == (score >= best)
        best = max(best, score) if index in info.kept else best
    assert info.score == pytest.approx(accuracy(soup, x, y))


def test_the_soup_never_scores_below_the_best_single_model():
    x, y = classification_data(TRUE_KERNEL, samples=120, seed=3)
    for trial in range(3):
        models = [noisy(100 * trial + seed, noise=1.5) for seed in range(4)]
        soup = kt.greedy_soup(models, (x, y))
        best_single = max(accuracy(model, x, y) for model in models)
        assert accuracy(soup, x, y) >= best_single
        assert soup.greedy_soup_info.score >= max(soup.greedy_soup_info.scores)


def test_helping_models_join_the_soup():
    x, y = classification_data(TRUE_KERNEL, samples=300, seed=4)
    soup = kt.greedy_soup(candidates(), (x, y))
    assert len(soup.greedy_soup_info.kept) >= 2


def test_a_dataset_of_labelled_batches_gives_the_same_soup():
    models = candidates()
    x, y = classification_data(TRUE_KERNEL, samples=100)
    from_arrays = kt.greedy_soup(models, (x, y)).greedy_soup_info
    from_dataset = kt.greedy_soup(
        models, tf.data.Dataset.from_tensor_slices((x, y)).batch(30)
    ).greedy_soup_info
    assert from_dataset.kept == from_arrays.kept
    np.testing.assert_allclose(from_dataset.scores, from_arrays.scores, atol=1e-6)


def regression_models():
    """Linear regressors y = x @ w: three near the truth, one far (index 2)."""
    rng = np.random.default_rng(5)
    truth = rng.normal(size=(4, 1)).astype("float32")
    kernels = [truth + 0.3 * rng.normal(size=truth.shape) for _ in range(3)]
    kernels.insert(2, -5 * truth)
    models = [linear_classifier(kernel) for kernel in kernels]
    x = rng.normal(size=(80, 4)).astype("float32")
    return models, x, x @ truth


def test_an_error_metric_is_minimised():
    models, x, y = regression_models()
    info = kt.greedy_soup(models, (x, y), metric="mse").greedy_soup_info
    assert info.mode == "min" and 2 not in info.kept
    own = [float(np.mean((model.predict_on_batch(x) - y) ** 2)) for model in models]
    np.testing.assert_allclose(info.scores, own, rtol=1e-5)
    assert info.score <= min(own)


def test_the_compiled_loss_scores_with_metric_loss():
    models, x, y = regression_models()
    for model in models:
        model.compile(loss="mae")
    info = kt.greedy_soup(models, (x, y), metric="loss", batch_size=32).greedy_soup_info
    own = [float(np.mean(np.abs(model.predict_on_batch(x) - y))) for model in models]
    np.testing.assert_allclose(info.scores, own, rtol=1e-5)
    assert info.mode == "min" and 2 not in info.kept


def test_a_metric_function_needs_a_mode():
    models = candidates()
    x, y = classification_data(TRUE_KERNEL, samples=60)

    def hits(y_true, y_pred):
        predicted = keras.ops.argmax(y_pred, axis=-1)
        return keras.ops.cast(
            keras.ops.equal(keras.ops.cast(y_true, "int32"), predicted), "float32"
        )

    with pytest.raises(ValueError, match="pass `mode='max'` or `mode='min'`"):
        kt.greedy_soup(models, (x, y), metric=hits)
    info = kt.greedy_soup(models, (x, y), metric=hits, mode="max").greedy_soup_info
    reference = kt.greedy_soup(models, (x, y)).greedy_soup_info
    assert info.kept == reference.kept and info.metric == "hits"


def test_a_metric_object_is_used_and_reset():
    models = candidates()
    x, y = classification_data(TRUE_KERNEL, samples=60)
    metric = keras.metrics.SparseCategoricalAccuracy(name="acc")
    info = kt.greedy_soup(models, (x, y), metric=metric).greedy_soup_info
    np.testing.assert_allclose(info.scores, [accuracy(m, x, y) for m in models], atol=1e-6)


def test_recalibrated_candidates_carry_their_measured_statistics():
    models = [randomize(bn_model(), seed=seed, scale=0.3) for seed in (1, 2)]
    x = inputs(40)
    # The labels are the recalibrated uniform soup's outputs: that soup scores 0.
    y = kt.average_weights(models, recalibrate_data=x, batch_size=40).predict_on_batch(x)
    soup = kt.greedy_soup(models, (x, y), metric="mse", recalibrate_data=x, batch_size=40)
    info = soup.greedy_soup_info
    assert sorted(info.kept) == [0, 1] and info.score == 0.0 and min(info.scores) > 0
    kernel, bias = soup.get_layer("a").get_weights()
    features = relu_dense(x, kernel, bias)
    bn = soup.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), features.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), features.var(axis=0), rtol=1e-5)


def test_one_model_is_an_error_that_says_what_to_do():
    with pytest.raises(ValueError, match="at least two models, got 1.*use the one model as it is"):
        kt.greedy_soup([noisy(1)], classification_data(TRUE_KERNEL))


@pytest.mark.parametrize(
    "validation_data, error, message",
    [
        ([np.zeros((2, 4))], TypeError, "`validation_data` must be an `\\(inputs, labels\\)`"),
        ((np.zeros((0, 4)), np.zeros(0)), ValueError, "`validation_data` is empty"),
    ],
)
def test_bad_validation_data_is_refused(validation_data, error, message):
    with pytest.raises(error, match=message):
        kt.greedy_soup([noisy(1), noisy(2)], validation_data)


def test_validation_data_without_labels_is_refused():
    x, _ = classification_data(TRUE_KERNEL, samples=10)
    with pytest.raises(ValueError, match="`validation_data` has no labels"):
        kt.greedy_soup([noisy(1), noisy(2)], tf.data.Dataset.from_tensor_slices(x).batch(5))


def test_bad_metrics_and_modes_are_refused():
    models, data = [noisy(1), noisy(2)], classification_data(TRUE_KERNEL, samples=10)
    with pytest.raises(ValueError, match="`mode` must be one of"):
        kt.greedy_soup(models, data, mode="best")
    with pytest.raises(TypeError, match="`metric` must be a metric name"):
        kt.greedy_soup(models, data, metric=3)
    with pytest.raises(ValueError, match="`metric='loss'` .* not compiled"):
        kt.greedy_soup(models, data, metric="loss")


def test_a_model_with_several_outputs_needs_metric_loss():
    def two_headed():
        inputs_ = keras.Input((4,))
        return keras.Model(
            inputs_, [keras.layers.Dense(3)(inputs_), keras.layers.Dense(3)(inputs_)]
        )

    x, y = classification_data(TRUE_KERNEL, samples=10)
    with pytest.raises(ValueError, match="several outputs.*`metric='loss'`"):
        kt.greedy_soup([two_headed(), two_headed()], (x, y))


def test_the_soup_saves_and_loads_like_any_model(tmp_path):
    x, y = classification_data(TRUE_KERNEL, samples=60)
    soup = kt.greedy_soup(candidates(), (x, y))
    path = tmp_path / "soup.keras"
    soup.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict_on_batch(x), soup.predict_on_batch(x))
