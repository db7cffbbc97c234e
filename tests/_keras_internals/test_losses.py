"""Pins what `keras_transfer._keras_internals.losses` relies on in Keras."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_transfer._keras_internals import losses


def numpy_of(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


def regularized_model():
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(2, kernel_regularizer=keras.regularizers.L2(0.1), name="dense"),
        ]
    )


def test_scaling_is_the_identity_without_a_distribution_strategy():
    value = keras.ops.convert_to_tensor(3.0)
    assert float(numpy_of(losses.scale_loss_for_distribution(value))) == 3.0
    assert float(numpy_of(losses.unscale_loss_for_distribution(value))) == 3.0


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="only tf.distribute scales losses"
)
def test_scaling_divides_and_multiplies_by_the_replica_count_under_tf_distribute():
    # The logical devices must exist before TensorFlow starts: a new process.
    script = textwrap.dedent(
        """
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        two = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, two)
        from keras_transfer._keras_internals import losses
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        def step():
            value = tf.constant(4.0)
            scaled = losses.scale_loss_for_distribution(value)
            return scaled, losses.unscale_loss_for_distribution(value)
        scaled, unscaled = strategy.run(step)
        print(sorted({float(v) for v in strategy.experimental_local_results(scaled)}),
              sorted({float(v) for v in strategy.experimental_local_results(unscaled)}))
        """
    )
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().splitlines()[-1] == "[2.0] [8.0]"


def test_compiled_loss_is_none_until_compiled_with_a_loss():
    model = regularized_model()
    assert losses.compiled_loss(model) is None
    model.compile("sgd")
    assert losses.compiled_loss(model) is None
    assert not losses.compiled_loss_has_run(model)


def test_compiled_loss_is_the_reduced_weighted_compile_loss():
    model = regularized_model()
    model.compile("sgd", loss="mse")
    assert not losses.compiled_loss_has_run(model)
    rng = np.random.default_rng(0)
    y_true = rng.normal(size=(4, 2)).astype("float32")
    y_pred = rng.normal(size=(4, 2)).astype("float32")
    weights = np.array([1.0, 0.0, 2.0, 1.0], "float32")
    value = numpy_of(losses.compiled_loss(model)(y_true, y_pred, weights))
    per_sample = ((y_true - y_pred) ** 2).mean(axis=1)
    np.testing.assert_allclose(value, (per_sample * weights).sum() / 4, rtol=1e-6)
    assert losses.compiled_loss_has_run(model)


def test_the_parts_add_up_to_model_compute_loss():
    model = regularized_model()
    model.compile("sgd", loss="mse")
    x = np.ones((4, 3), "float32")
    y = np.zeros((4, 2), "float32")
    y_pred = model(x)
    assert len(model.losses) == 1
    parts = losses.compiled_loss(model)(y, y_pred, None) + sum(
        losses.aggregate_additional_loss(model, loss) for loss in model.losses
    )
    np.testing.assert_allclose(numpy_of(parts), numpy_of(model.compute_loss(x, y, y_pred)), 1e-6)
    kernel = numpy_of(model.get_layer("dense").kernel)
    np.testing.assert_allclose(
        numpy_of(losses.aggregate_additional_loss(model, model.losses[0])),
        0.1 * (kernel**2).sum(),
        rtol=1e-6,
    )


def test_an_integer_additional_loss_is_summed_as_a_float():
    model = regularized_model()
    total = losses.aggregate_additional_loss(model, keras.ops.convert_to_tensor([1, 2], "int32"))
    assert keras.backend.is_float_dtype(keras.backend.standardize_dtype(total.dtype))
    assert float(numpy_of(total)) == 3.0
