"""LoRA with the rest of the library: freezing, per-group rates, feature
caching, mixed precision, `.keras` files and resumed runs."""

import keras
import numpy as np
import pytest
from lora.lora_testing import (
    changed_paths,
    factor_paths,
    lora_dense_model,
    perturb_factors,
    snapshot,
)
from testing_utils import dense_model, regression_data, values

import keras_transfer as kt
from keras_transfer.freezing.freeze import trainable_capable_under

FACTORS_A = ["a/lora_kernel_a", "a/lora_kernel_b"]
FACTORS_B = ["b/lora_kernel_a", "b/lora_kernel_b"]
HEAD = ["head/kernel", "head/bias"]


def trainable_paths(model):
    return [v.path for v in model.trainable_weights]


def test_keras_trainable_setter_unfreezes_a_lora_kernel():
    """Why freezing must know about LoRA: Keras' `trainable = True` sets every
    variable of the layer trainable, the kernel LoRA froze included."""
    layer = dense_model().get_layer("a")
    layer.enable_lora(2)
    assert not layer.weights[0].trainable
    layer.trainable = False
    layer.trainable = True
    assert layer.weights[0].trainable


def test_unfreezing_a_lora_group_trains_its_factors_not_its_base():
    model = lora_dense_model()
    kt.freeze(model, trainable_groups=1)
    assert trainable_paths(model) == HEAD
    kt.unfreeze(model)
    assert trainable_paths(model) == FACTORS_A + FACTORS_B + HEAD
    kt.freeze(model, trainable_groups=2, freeze_batchnorm=False)
    assert trainable_paths(model) == FACTORS_B + HEAD


def test_a_group_without_lora_unfreezes_in_full():
    model = dense_model()
    kt.enable_lora(model, rank=2, groups="b")
    assert trainable_paths(model) == FACTORS_B + HEAD
    kt.unfreeze(model)
    assert trainable_paths(model) == ["a/kernel", "a/bias"] + FACTORS_B + HEAD


def test_batchnorm_in_a_lora_group_runs_in_inference_mode():
    model = dense_model(with_batchnorm=True)
    kt.enable_lora(model, rank=2)
    kt.unfreeze(model, freeze_batchnorm=False)
    assert not model.get_layer("bn").trainable
    assert "bn/gamma" not in trainable_paths(model)


def test_the_optimizer_tracks_no_base_weights_of_lora_groups():
    model = lora_dense_model()
    plan = kt.layer_groups(model)
    assert [v.path for v in trainable_capable_under(model, plan)] == (FACTORS_A + FACTORS_B + HEAD)


def test_freeze_schedule_trains_the_head_then_the_factors_never_the_base():
    model = lora_dense_model()
    x, y = regression_data()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    start = snapshot(model)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # Builds the optimizer on factors + head.
    assert changed_paths(start, model) == sorted(FACTORS_A + FACTORS_B + HEAD)
    model = lora_dense_model()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    schedule = kt.FreezeSchedule(model, {0: 1, 1: "all"}, verbose=0)
    first = snapshot(model)
    history = model.fit(
        x, y, epochs=1, batch_size=8, verbose=0, shuffle=False, callbacks=[schedule]
    )
    assert changed_paths(first, model) == sorted(HEAD)
    second = snapshot(model)
    history = model.fit(
        x, y, initial_epoch=1, epochs=2, batch_size=8, verbose=0, callbacks=[schedule]
    )
    assert changed_paths(second, model) == sorted(FACTORS_A + FACTORS_B + HEAD)
    assert history.history["trainable_params"] == [69.0]


def test_discriminative_lr_scales_the_factor_steps_of_each_group():
    x, y = regression_data()
    plain, scaled = lora_dense_model(), lora_dense_model()
    scaled.set_weights(plain.get_weights())
    start = snapshot(plain)
    plain.compile(keras.optimizers.SGD(0.05), "mse")
    plain.train_on_batch(x, y)
    scaled.compile(kt.DiscriminativeLR(keras.optimizers.SGD(0.05), scaled, decay=2.0), "mse")
    scaled.train_on_batch(x, y)
    plain_after, scaled_after = snapshot(plain), snapshot(scaled)
    multipliers = {"a/": 0.25, "b/": 0.5, "head/": 1.0}
    for path in FACTORS_A + FACTORS_B + HEAD:
        multiplier = next(m for prefix, m in multipliers.items() if path.startswith(prefix))
        plain_step = plain_after[path] - start[path]
        assert np.abs(plain_step).max() > 0, path
        np.testing.assert_allclose(
            scaled_after[path] - start[path], multiplier * plain_step, rtol=1e-5, atol=1e-7
        )


def test_a_plan_resolved_before_lora_scales_the_factors_by_their_layers_group():
    x, y = regression_data()
    plain, scaled = lora_dense_model(), dense_model()
    plan = kt.layer_groups(scaled)  # Before LoRA: the groups list no factors.
    kt.enable_lora(scaled, rank=2)
    scaled.set_weights(plain.get_weights())
    start = snapshot(plain)
    plain.compile(keras.optimizers.SGD(0.05), "mse")
    plain.train_on_batch(x, y)
    scaled.compile(kt.DiscriminativeLR(keras.optimizers.SGD(0.05), plan, decay=2.0), "mse")
    scaled.train_on_batch(x, y)
    plain_after, scaled_after = snapshot(plain), snapshot(scaled)
    for path in FACTORS_A:
        np.testing.assert_allclose(
            scaled_after[path] - start[path], 0.25 * (plain_after[path] - start[path]), 1e-5, 1e-7
        )


def test_feature_cache_trains_the_head_while_lora_waits():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="a")(inputs)
    backbone = keras.Model(inputs, keras.layers.Dense(8, name="b")(hidden), name="backbone")
    model = keras.Sequential(
        [keras.Input((6,)), backbone, keras.layers.Dense(1, name="head")], name="model"
    )
    kt.enable_lora(model, rank=2)
    kt.freeze(model, trainable_groups=1)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    x, y = regression_data()
    start = snapshot(model)
    kt.FeatureCache(model).fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert changed_paths(start, model) == ["model/head/bias", "model/head/kernel"]
    kt.unfreeze(model)
    assert [v.path for v in model.trainable_weights if "lora" not in v.path] == [
        "model/head/kernel",
        "model/head/bias",
    ]


@pytest.mark.parametrize("policy", ["mixed_bfloat16"])
def test_mixed_precision_trains_float32_factors(policy):
    keras.config.set_dtype_policy(policy)
    model = lora_dense_model()
    layer = model.get_layer("a")
    assert layer.lora_kernel_a.dtype == "float32" and layer.compute_dtype == "bfloat16"
    model.compile(keras.optimizers.SGD(0.05), "mse")
    start = snapshot(model)
    history = model.fit(*regression_data(), epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert changed_paths(start, model) == sorted(factor_paths(model) + HEAD)


def test_keras_file_round_trip_in_safe_mode(tmp_path):
    model = lora_dense_model(rank=2)
    x, _ = regression_data()
    path = str(tmp_path / "lora.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), 1e-6)
    layer = loaded.get_layer("a")
    assert layer.lora_enabled and layer.lora_rank == 2
    # Keras writes the merged kernel and zero factors: the update lives on in the kernel.
    assert not np.any(values([layer.lora_kernel_b])[0])
    kt.merge_lora(loaded)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), 1e-6)


def test_safe_backup_and_restore_resumes_a_lora_run_exactly(tmp_path):
    def run(epochs, *callbacks):
        keras.utils.set_random_seed(0)
        model = lora_dense_model()
        model.compile(keras.optimizers.Adam(0.01), "mse")
        model.fit(
            *regression_data(),
            epochs=epochs,
            batch_size=8,
            shuffle=False,
            verbose=0,
            callbacks=list(callbacks),
        )
        return model

    reference = run(3)
    run(1, kt.SafeBackupAndRestore(tmp_path, delete_checkpoint=False))
    resumed = run(3, kt.SafeBackupAndRestore(tmp_path))
    for variable, expected, actual in zip(
        reference.weights, values(reference.weights), values(resumed.weights)
    ):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6, err_msg=variable.path)


def test_lora_enabled_between_two_fits_trains_without_a_recompile():
    model = dense_model()
    x, y = regression_data()
    kt.freeze(model, trainable_groups=1)
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # The head first.
    kt.enable_lora(model, rank=2)
    perturb_factors(model)
    start = snapshot(model)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert changed_paths(start, model) == sorted(FACTORS_A + FACTORS_B + HEAD)
