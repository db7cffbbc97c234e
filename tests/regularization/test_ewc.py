"""`kt.EWC`: its Fisher terms, penalty, gradient and log entry against numpy;
frozen variables; saving, resuming and composing with `kt.L2SP`."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from regularization.regularization_testing import (
    classification_data,
    numpy_fisher,
    softmax_model,
    total,
    zero_loss,
)
from testing_utils import dense_model, regression_data, values

import keras_transfer as kt

STRENGTH = 3.0
LOSS = "sparse_categorical_crossentropy"


def model_weights(model):
    """The model's own weights, without those of a penalty attached to it."""
    return [v for layer in model.layers for v in layer.weights]


def random_fisher(model, seed=0):
    rng = np.random.default_rng(seed)
    return {
        v.path: rng.uniform(0.1, 1.0, size=v.shape).astype("float32") for v in model_weights(model)
    }


def perturb(variables, seed=1):
    rng = np.random.default_rng(seed)
    for variable in variables:
        variable.assign(variable + rng.normal(size=variable.shape).astype("float32"))


def reference_penalty(model, fisher, anchors, strength=STRENGTH):
    """strength/2 * sum F * (w - w*)^2."""
    return sum(
        strength / 2 * np.sum(fisher[v.path] * (now - anchor) ** 2)
        for v, now, anchor in zip(model_weights(model), values(model_weights(model)), anchors)
    )


def test_measures_the_per_example_fisher_of_the_old_task():
    model = softmax_model()
    model.compile(optimizer="sgd", loss=LOSS)
    x, y = classification_data(10)
    ewc = kt.EWC(model, (x, y), strength=STRENGTH, batch_size=4, verbose=0)
    expected = numpy_fisher(model, x, y)
    assert list(ewc.fisher) == list(expected)
    for path, array in expected.items():
        np.testing.assert_allclose(ewc.fisher[path], array, rtol=1e-5, atol=1e-7)
    assert ewc.strength == STRENGTH


def test_penalty_and_its_gradient_equal_the_numpy_reference():
    model = dense_model()
    fisher = random_fisher(model)
    anchors = values(model_weights(model))
    ewc = kt.EWC(model, fisher, strength=STRENGTH)
    perturb(model_weights(model))
    before = values(model_weights(model))
    assert len(model.losses) == 6
    np.testing.assert_allclose(
        total(model.losses), reference_penalty(model, fisher, anchors), rtol=1e-5
    )
    np.testing.assert_allclose(
        total([ewc.penalty()]), reference_penalty(model, fisher, anchors), rtol=1e-5
    )
    # One SGD step at rate 1 on no data loss: w - strength * F * (w - w*).
    model.compile(keras.optimizers.SGD(1.0), loss=zero_loss)
    x, y = regression_data(8)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for variable, now, was, anchor in zip(
        model_weights(model), values(model_weights(model)), before, anchors
    ):
        expected = was - STRENGTH * fisher[variable.path] * (was - anchor)
        np.testing.assert_allclose(now, expected, rtol=1e-5, atol=1e-6)
    # The logged entry is the penalty at the step's starting weights.
    np.testing.assert_allclose(
        history.history["ewc_loss"],
        [reference_penalty_at(before, model, fisher, anchors)],
        rtol=1e-5,
    )


def reference_penalty_at(weights, model, fisher, anchors):
    return sum(
        STRENGTH / 2 * np.sum(fisher[v.path] * (w - a) ** 2)
        for v, w, a in zip(model_weights(model), weights, anchors)
    )


def test_frozen_variables_are_measured_but_carry_no_term_while_frozen():
    model = dense_model()
    model.get_layer("a").trainable = False
    x, y = regression_data(8)
    ewc = kt.EWC(model, (x, y), loss="mse", verbose=0)
    # Measured on every weight that could train, so unfreezing keeps it.
    assert list(ewc.fisher) == [v.path for v in model_weights(model)]
    assert np.any(ewc.fisher["a/kernel"] > 0)
    assert len(model.losses) == 4
    perturb(model.get_layer("a").weights)
    frozen = values(model.get_layer("a").weights)
    model.compile(keras.optimizers.SGD(1.0), loss=zero_loss)
    model.fit(x, y, verbose=0)
    for now, was in zip(values(model.get_layer("a").weights), frozen):
        np.testing.assert_array_equal(now, was)


def test_a_fisher_dict_leaves_out_what_it_does_not_name():
    model = dense_model()
    fisher = {"head/kernel": np.ones((8, 1), "float32")}
    ewc = kt.EWC(model, fisher)
    assert np.all(ewc.fisher["a/kernel"] == 0) and np.all(ewc.fisher["head/kernel"] == 1)


def test_a_dataset_of_the_old_task_works_like_arrays():
    model = softmax_model()
    x, y = classification_data(9)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    ewc = kt.EWC(model, dataset, samples=6, loss=LOSS, verbose=0)
    expected = numpy_fisher(model, x[:6], y[:6])
    for path, array in expected.items():
        np.testing.assert_allclose(ewc.fisher[path], array, rtol=1e-5, atol=1e-7)


def test_composes_with_l2sp_and_removes_independently():
    model = dense_model()
    ewc = kt.EWC(model, random_fisher(model), strength=STRENGTH)
    l2sp = kt.L2SP(model)
    perturb(model_weights(model))
    both = total(model.losses)
    assert both == pytest.approx(total([ewc.penalty()]) + total([l2sp.penalty()]), rel=1e-5)
    model.compile(keras.optimizers.SGD(0.01), loss="mse")
    x, y = regression_data(8)
    assert {"ewc_loss", "l2sp_loss"} <= set(model.fit(x, y, verbose=0).history)
    ewc.remove()  # The first attached, wrapped by L2SP's terms since.
    assert total(model.losses) == pytest.approx(total([l2sp.penalty()]), rel=1e-5)
    l2sp.remove()
    assert model.losses == [] and all(v.regularizer is None for v in model_weights(model))


def test_safe_backup_and_restore_and_keras_files_keep_the_penalty(tmp_path):
    x, y = classification_data(8)
    model = softmax_model()
    model.compile(keras.optimizers.SGD(0.1), loss=LOSS)
    ewc = kt.EWC(model, (x, y), strength=STRENGTH, verbose=0)
    state = values(ewc.weights)
    backup_dir = str(tmp_path / "backup")
    model.fit(
        x,
        y,
        epochs=1,
        verbose=0,
        callbacks=[kt.SafeBackupAndRestore(backup_dir, delete_checkpoint=False)],
    )
    # A fresh model with other weights: the backup brings back the Fisher
    # terms and anchors measured on the first one.
    keras.utils.set_random_seed(5)
    resumed = softmax_model()
    resumed.compile(keras.optimizers.SGD(0.1), loss=LOSS)
    resumed_ewc = kt.EWC(resumed, (x, y), strength=1.0, verbose=0)
    resumed.fit(
        x,
        y,
        epochs=2,
        verbose=0,
        callbacks=[kt.SafeBackupAndRestore(backup_dir, delete_checkpoint=False)],
    )
    for a, b in zip(values(resumed_ewc.weights)[2:], state[2:]):
        np.testing.assert_array_equal(a, b)
    assert resumed_ewc.strength == STRENGTH
    # A `.keras` round trip, and `EWC.load` to attach the penalty again.
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    restored = kt.EWC.load(loaded, path)
    for a, b in zip(values(restored.weights)[2:], values(ewc.weights)[2:]):
        np.testing.assert_array_equal(a, b)
    assert restored.get_config() == {**ewc.get_config(), "name": restored.name}
    assert total(loaded.losses) == pytest.approx(total(model.losses), rel=1e-6)


def test_is_registered_with_a_plain_config():
    assert keras.saving.get_registered_object("keras_transfer>EWC") is kt.EWC
    model = softmax_model()
    ewc = kt.EWC(model, classification_data(4), strength=2.0, samples=3, loss=LOSS, verbose=0)
    assert ewc.get_config() == {"name": ewc.name, "strength": 2.0, "samples": 3}
    ewc.strength = 4.0
    assert ewc.strength == 4.0


def test_bad_inputs_say_what_to_do():
    model = softmax_model()
    data = classification_data(4)
    for strength in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="`strength` must be a finite number >= 0"):
            kt.EWC(model, data, strength=strength, loss=LOSS, verbose=0)
    with pytest.raises(ValueError, match="no labelled examples"):
        kt.EWC(model, (data[0][:0], data[1][:0]), loss=LOSS, verbose=0)
    with pytest.raises(ValueError, match="empty Fisher information"):
        kt.EWC(model, {})
    with pytest.raises(ValueError, match="variables the model cannot train"):
        kt.EWC(model, {"other/kernel": np.ones(3)})
    with pytest.raises(ValueError, match="has shape"):
        kt.EWC(model, {"classifier/head/bias": np.ones(4)})
    with pytest.raises(ValueError, match="finite and >= 0"):
        kt.EWC(model, {"classifier/head/bias": -np.ones(3)})
    assert model.losses == []  # Nothing attached by a refused call.
    kt.EWC(model, {"classifier/head/bias": np.ones(3)})
    with pytest.raises(ValueError, match="already has an EWC"):
        kt.EWC(model, (data[0][:0], data[1][:0]), loss=LOSS)  # Refused before measuring.
    frozen = softmax_model()
    frozen.trainable = False
    with pytest.raises(ValueError, match="no trainable weights"):
        kt.EWC(frozen, data, loss=LOSS, verbose=0)


def test_load_refuses_a_file_saved_without_the_penalty(tmp_path):
    model = softmax_model()
    path = str(tmp_path / "plain.weights.h5")
    model.save_weights(path)
    with pytest.raises(ValueError, match="saved while an EWC was attached"):
        kt.EWC.load(model, path)
    assert model.losses == [] and not hasattr(model, "keras_transfer_ewc")
    with pytest.raises(FileNotFoundError):
        kt.EWC.load(model, str(tmp_path / "missing.weights.h5"))
    assert model.losses == []
