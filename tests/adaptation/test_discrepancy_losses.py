import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_transfer.adaptation import CoralLoss, MMDLoss


def coral_reference(source, target):
    dim = source.shape[1]
    difference = np.cov(source, rowvar=False) - np.cov(target, rowvar=False)
    return (difference**2).sum() / (4 * dim * dim)


def mmd_reference(source, target, variances):
    features = np.concatenate([source, target]).astype("float64")
    distances = ((features[:, None, :] - features[None, :, :]) ** 2).sum(-1)
    kernel = np.mean([np.exp(-distances / (2 * v)) for v in variances], axis=0)
    n = len(source)
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


def batches(n_source=12, n_target=7, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    source = rng.normal(size=(n_source, dim)).astype("float32")
    mixing = rng.normal(size=(dim, dim)).astype("float32")
    target = (rng.normal(size=(n_target, dim)) @ mixing + 0.5).astype("float32")
    return source, target


def as_float(value):
    return float(ops.convert_to_numpy(value))


def test_coral_matches_numpy_with_unequal_batches():
    source, target = batches()
    assert as_float(CoralLoss()(source, target)) == pytest.approx(
        coral_reference(source, target), rel=1e-4
    )


def test_coral_is_zero_for_equal_covariances_and_ignores_means():
    source, _ = batches()
    assert as_float(CoralLoss()(source, source + 3.0)) == pytest.approx(0.0, abs=1e-6)


def test_coral_flattens_image_features():
    rng = np.random.default_rng(1)
    source = rng.normal(size=(6, 2, 2, 3)).astype("float32")
    target = rng.normal(size=(9, 2, 2, 3)).astype("float32")
    expected = coral_reference(source.reshape(6, -1), target.reshape(9, -1))
    assert as_float(CoralLoss()(source, target)) == pytest.approx(expected, rel=1e-4)


def test_mmd_with_fixed_bandwidths_matches_numpy():
    source, target = batches()
    loss = MMDLoss(bandwidths=[0.5, 2.0])
    expected = mmd_reference(source, target, [0.25, 4.0])
    assert as_float(loss(source, target)) == pytest.approx(expected, rel=1e-4)


def test_mmd_default_bandwidths_follow_the_mean_distance():
    source, target = batches()
    features = np.concatenate([source, target]).astype("float64")
    distances = ((features[:, None] - features[None]) ** 2).sum(-1)
    n = len(features)
    mean_distance = distances.sum() / (n * n - n)
    variances = [0.5 * mean_distance * m for m in (0.125, 0.25, 0.5, 1.0, 2.0)]
    expected = mmd_reference(source, target, variances)
    assert as_float(MMDLoss()(source, target)) == pytest.approx(expected, rel=1e-4)
    # Scaling both domains scales the bandwidths with them: same loss.
    assert as_float(MMDLoss()(10 * source, 10 * target)) == pytest.approx(expected, rel=1e-3)


def test_mmd_is_zero_for_identical_batches_and_grows_with_shift():
    source, _ = batches(n_source=20)
    assert as_float(MMDLoss()(source, source)) == pytest.approx(0.0, abs=1e-6)
    shifts = [as_float(MMDLoss()(source, source + s)) for s in (0.5, 1.0, 2.0)]
    assert 0 < shifts[0] < shifts[1] < shifts[2]


def test_discrepancies_train_features_towards_each_other():
    """As compile losses (y_true = source batch, y_pred = mapped target),
    both pull a scaled target back onto the source distribution."""
    rng = np.random.default_rng(2)
    source = rng.normal(size=(32, 2)).astype("float32")
    target = rng.normal(size=(32, 2)).astype("float32")
    for loss in (MMDLoss(), CoralLoss()):
        model = keras.Sequential(
            [
                keras.Input((2,)),
                keras.layers.Dense(
                    2, use_bias=False, kernel_initializer=keras.initializers.Identity(3.0)
                ),
            ]
        )
        model.compile(optimizer=keras.optimizers.Adam(0.2), loss=loss)
        history = model.fit(target, source, batch_size=32, epochs=10, shuffle=False, verbose=0)
        losses = history.history["loss"]
        assert losses[-1] < 0.5 * losses[0], (loss.name, losses)


def test_mismatched_feature_sizes_and_vectors_are_refused():
    source, _ = batches(dim=5)
    _, target = batches(dim=4)
    for loss in (CoralLoss(), MMDLoss()):
        with pytest.raises(ValueError, match="same size"):
            loss(source, target)
        with pytest.raises(ValueError, match="rank >= 2"):
            loss(source[:, 0], source[:, 0])


def test_coral_of_a_one_row_batch_is_zero_with_a_warning():
    source, _ = batches()
    with pytest.warns(UserWarning, match="has no covariance; this batch's loss is 0"):
        assert as_float(CoralLoss()(source, source[:1])) == 0.0
    # One row is enough for MMD's kernel means.
    assert np.isfinite(as_float(MMDLoss()(source, source[:1])))


@pytest.mark.parametrize("bad", [[], [0.0], [-1.0], ["a"], [True], [float("inf")], [float("nan")]])
def test_bad_bandwidths_are_refused(bad):
    with pytest.raises(ValueError, match="finite numbers > 0"):
        MMDLoss(bandwidths=bad)
    with pytest.raises(ValueError, match="`bandwidth_multipliers` must be .* finite numbers > 0"):
        MMDLoss(bandwidth_multipliers=bad)


def test_configs_round_trip():
    for loss in (CoralLoss(name="c"), MMDLoss(bandwidths=[1.0, 2.0])):
        config = keras.saving.serialize_keras_object(loss)
        rebuilt = keras.saving.deserialize_keras_object(config, safe_mode=True)
        assert type(rebuilt) is type(loss)
        assert rebuilt.get_config() == loss.get_config()


def test_mmd_of_collapsed_identical_features_is_zero_with_finite_gradients():
    # Default bandwidths come from the batch's mean distance, 0 here.
    features = keras.Variable(np.ones((6, 4), "float32"))
    loss, gradients = value_and_gradient(MMDLoss(), features, features)
    assert as_float(loss) == 0.0
    assert np.isfinite(gradients).all()


@pytest.mark.parametrize("loss", [CoralLoss(), MMDLoss()])
def test_a_one_row_batch_inside_a_training_step_gives_a_finite_loss(loss):
    # In a step the batch size is unknown until run time (the last batch of
    # an epoch can hold one example); CORAL's covariance is then undefined.
    import keras_transfer as kt

    model = kt.DomainAdaptationModel(
        feature_extractor=keras.Sequential([keras.layers.Dense(4)]),
        task_head=keras.layers.Dense(2),
        adaptation_loss=loss,
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    pairs = kt.domain_pairs(
        (rng.normal(size=(9, 3)), rng.integers(0, 2, 9)),
        rng.normal(size=(9, 3)),
        batch_size=4,
        shuffle=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CORAL's one-row warning, on JAX and torch.
        history = model.fit(pairs, epochs=2, verbose=0)
    assert np.isfinite(history.history["domain_loss"]).all()
    assert all(np.isfinite(w).all() for w in model.get_weights())


def value_and_gradient(loss, source, target):
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss(source, target)
        return value, ops.convert_to_numpy(tape.gradient(value, source.value))
    if keras.backend.backend() == "jax":
        import jax

        value, gradient = jax.value_and_grad(lambda s: loss(s, target.value))(source.value)
        return value, np.asarray(gradient)

    value_tensor = source.value.detach().requires_grad_(True)
    value = loss(value_tensor, target.value.detach())
    value.backward()
    return value.detach(), value_tensor.grad.numpy()
