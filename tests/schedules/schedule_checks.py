"""Checks that every learning-rate schedule must pass, on any backend."""

import keras
import numpy as np
from testing_utils import branchy_data, branchy_model, dense_model, regression_data, values

import keras_transfer as kt


class _RateAndKernelRecorder(keras.callbacks.Callback):
    """Reads the optimizer's rate before each step and the kernel after it.

    One step per epoch: at epoch boundaries the variables are up to date on
    every backend (JAX keeps them in its own state within an epoch).
    """

    def on_train_begin(self, logs=None):
        self.rates, self.kernels = [], [self._kernel()]

    def on_epoch_begin(self, epoch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    def on_epoch_end(self, epoch, logs=None):
        self.kernels.append(self._kernel())

    def _kernel(self):
        return float(keras.ops.convert_to_numpy(self.model.layers[-1].kernel)[0, 0])


def assert_follows_reference_inside_fit(schedule, expected):
    """SGD on a loss whose gradient is 1 moves the weight by the rate of each step."""
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    model.compile(keras.optimizers.SGD(schedule), loss=lambda y, p: keras.ops.mean(p))
    recorder = _RateAndKernelRecorder()
    model.fit(
        np.ones((1, 1)), np.zeros((1, 1)), epochs=len(expected), verbose=0, callbacks=[recorder]
    )
    scale = max(expected)
    np.testing.assert_allclose(recorder.rates, expected, rtol=1e-5, atol=1e-7 * scale)
    moved = -np.diff(recorder.kernels)
    np.testing.assert_allclose(moved, expected, rtol=1e-4, atol=1e-6 * scale * len(expected))


def assert_round_trips(schedule):
    serialized = keras.optimizers.schedules.serialize(schedule)
    restored = keras.optimizers.schedules.deserialize(serialized)
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    steps = range(0, schedule.total_steps + 2, max(1, schedule.total_steps // 7))
    np.testing.assert_array_equal(
        [float(restored(step)) for step in steps], [float(schedule(step)) for step in steps]
    )


def assert_saved_in_a_keras_model(schedule, tmp_path):
    """Plain and DiscriminativeLR optimizers keep the schedule and its position."""
    x, y = regression_data()
    for name, wrap in [
        ("plain", lambda optimizer, model: optimizer),
        ("discriminative", lambda optimizer, model: kt.DiscriminativeLR(optimizer, model)),
    ]:
        model = dense_model()
        model.compile(wrap(keras.optimizers.SGD(schedule), model), "mse")
        for _ in range(3):
            model.train_on_batch(x, y)
        path = str(tmp_path / f"{name}.keras")
        model.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
        assert loaded.optimizer.get_config()["learning_rate"] == (
            keras.optimizers.schedules.serialize(schedule)
        )
        rate = float(keras.ops.convert_to_numpy(loaded.optimizer.learning_rate))
        assert rate == float(schedule(3))
        model.train_on_batch(x, y)
        loaded.train_on_batch(x, y)
        for a, b in zip(values(model.weights), values(loaded.weights)):
            np.testing.assert_allclose(a, b, rtol=1e-6)


def _branch_gradients(weights, x, y):
    """Gradients of the branchy model's mean squared error, in float64."""
    x64, y64 = x.astype("float64"), y.astype("float64")
    gradients = {}
    for column, name in enumerate(("a", "b", "head")):
        kernel, bias = (w.astype("float64") for w in weights[name])
        residual = x64 @ kernel + bias - y64[:, column : column + 1]
        d_prediction = 2.0 * residual / residual.size / 3
        gradients[name] = [x64.T @ d_prediction, d_prediction.sum(axis=0)]
    return gradients


def assert_groups_move_by_multiplier_times_schedule(schedule):
    """With SGD, a group of multiplier m moves by exactly -m * schedule(step) * grad."""
    multipliers = {"a": 0.25, "b": 0.5, "head": 1.0}
    model = branchy_model()
    optimizer = kt.DiscriminativeLR(
        keras.optimizers.SGD(schedule), model, multipliers={"^a/": 0.25, "^b/": 0.5}
    )
    model.compile(optimizer, "mse")
    x, y = branchy_data()
    for step in range(schedule.total_steps + 1):
        before = {name: values(model.get_layer(name).weights) for name in multipliers}
        gradients = _branch_gradients(before, x, y)
        model.train_on_batch(x, y)
        rate = float(schedule(step))
        for name, multiplier in multipliers.items():
            after = values(model.get_layer(name).weights)
            for start, end, gradient in zip(before[name], after, gradients[name]):
                expected = -multiplier * rate * gradient
                # float32 gradients: entries that cancel over the batch are only
                # precise relative to the largest one.
                np.testing.assert_allclose(
                    end - start, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max()
                )
