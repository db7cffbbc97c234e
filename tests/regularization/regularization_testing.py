"""Tiny classifiers and numpy references shared by the regularization tests."""

import keras
import numpy as np
from keras import ops

CLASSES = 3


def softmax_model(activation="softmax"):
    """input (4) -> Dense(3) softmax, named so that variable paths are fixed."""
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(CLASSES, activation=activation, name="head")],
        name="classifier",
    )


def classification_data(samples=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 4)).astype("float32")
    return x, rng.integers(0, CLASSES, size=samples)


def softmax_errors(model, x, y):
    """p_i - e_{y_i} per example: the gradient of -log p(y_i | x_i) in the logits."""
    kernel, bias = (np.asarray(ops.convert_to_numpy(v)) for v in model.get_layer("head").weights)
    logits = x @ kernel + bias
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return probabilities - np.eye(CLASSES)[y]


def numpy_fisher(model, x, y):
    """Mean over examples of the squared gradient of -log p(y_i | x_i), for a
    softmax layer: d/dW = x_i (p_i - e_{y_i})^T, d/db = p_i - e_{y_i}."""
    error = softmax_errors(model, x, y)
    kernel_grads = x[:, :, None] * error[:, None, :]
    return {
        "classifier/head/kernel": np.mean(kernel_grads**2, axis=0),
        "classifier/head/bias": np.mean(error**2, axis=0),
    }


def zero_loss(y_true, y_pred):
    """No data term: a step then follows the penalty's gradient alone."""
    return ops.mean(y_pred) * 0.0


def total(losses):
    """The sum of `model.losses`, as a float."""
    return float(sum(ops.convert_to_numpy(loss) for loss in losses))
