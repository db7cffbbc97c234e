"""Tiny models, data and numpy references for the weight-averaging tests."""

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="soup_testing")
class CountingScale(keras.layers.Layer):
    """Multiplies by a learned scale and keeps an integer counter weight.

    `trainable_scale=False` creates the scale as a non-trainable weight: the
    same path and shape, but a different trainable set.
    """

    def __init__(self, trainable_scale=True, **kwargs):
        super().__init__(**kwargs)
        self.trainable_scale = trainable_scale

    def build(self, input_shape):
        self.scale = self.add_weight(
            shape=(input_shape[-1],),
            initializer="ones",
            trainable=self.trainable_scale,
            name="scale",
        )
        self.counter = self.add_weight(
            shape=(), initializer="zeros", dtype="int32", trainable=False, name="counter"
        )

    def call(self, inputs):
        return inputs * self.scale

    def get_config(self):
        return {**super().get_config(), "trainable_scale": self.trainable_scale}


@keras.saving.register_keras_serializable(package="soup_testing")
class TwoDense(keras.Model):
    """A subclassed model, rebuilt from its config."""

    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = keras.layers.Dense(units, activation="relu")
        self.out = keras.layers.Dense(2)

    def call(self, inputs):
        return self.out(self.hidden(inputs))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def counting_model(trainable_scale=True, width=4, name="counting"):
    """x -> a (Dense) -> scale (CountingScale) -> head (Dense, 3 logits)."""
    inputs = keras.Input((5,), name="x")
    hidden = keras.layers.Dense(width, activation="tanh", name="a")(inputs)
    hidden = CountingScale(trainable_scale, name="scale")(hidden)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(hidden), name=name)


def bn_model(name="bn_model"):
    """x -> a (Dense, relu) -> bn -> b (Dense, relu) -> bn_2 -> head."""
    inputs = keras.Input((6,), name="x")
    hidden = keras.layers.Dense(8, activation="relu", name="a")(inputs)
    hidden = keras.layers.BatchNormalization(name="bn")(hidden)
    hidden = keras.layers.Dense(5, activation="relu", name="b")(hidden)
    hidden = keras.layers.BatchNormalization(name="bn_2")(hidden)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(hidden), name=name)


def randomize(model, seed, scale=1.0):
    """Sets every float weight to random values (variances positive), in place."""
    rng = np.random.default_rng(seed)
    values = []
    for variable, value in zip(model.weights, model.get_weights()):
        if "float" not in str(value.dtype):
            values.append(value + seed)
        elif "variance" in variable.path:
            values.append(rng.uniform(0.5, 2.0, size=value.shape).astype(value.dtype))
        else:
            values.append((scale * rng.normal(size=value.shape)).astype(value.dtype))
    model.set_weights(values)
    return model


def inputs(samples=40, features=6, seed=0):
    return np.random.default_rng(seed).normal(size=(samples, features)).astype("float32")


def relu_dense(x, kernel, bias):
    return np.maximum(x.astype(np.float64) @ kernel + bias, 0.0)


def batch_norm(features, mean, variance, gamma, beta, epsilon=1e-3):
    return (features - mean) / np.sqrt(variance + epsilon) * gamma + beta


def interpolation(start, end, alpha):
    """The numpy reference of `kt.wise_ft`, per weight."""
    return ((1.0 - alpha) * start.astype(np.float64) + alpha * end.astype(np.float64)).astype(
        end.dtype
    )


def mean_of(values):
    """The numpy reference of a soup, per weight."""
    return np.mean(np.stack([v.astype(np.float64) for v in values]), axis=0).astype(values[0].dtype)


def linear_classifier(kernel, bias=None, name="linear"):
    """A Sequential softmax-free classifier with the given kernel."""
    kernel = np.asarray(kernel, dtype="float32")
    model = keras.Sequential(
        [keras.Input((kernel.shape[0],)), keras.layers.Dense(kernel.shape[1], name="head")],
        name=name,
    )
    bias = np.zeros(kernel.shape[1], "float32") if bias is None else np.asarray(bias, "float32")
    model.set_weights([kernel, bias])
    return model


def classification_data(kernel, samples=200, seed=0):
    """Inputs and the labels the true `kernel` gives them."""
    x = np.random.default_rng(seed).normal(size=(samples, kernel.shape[0])).astype("float32")
    return x, (x @ kernel).argmax(axis=1).astype("int32")


def accuracy(model, x, y):
    return float(np.mean(np.asarray(model.predict_on_batch(x)).argmax(axis=1) == y))
