"""Re-estimating BatchNormalization moving statistics after weights change.

A BatchNormalization layer's moving mean and variance describe the features
that reach it, and those are not linear in the weights before it: the
average of two models' statistics is not the statistics of the averaged
model. `recalibrate_batch_norm` resets them and measures them again, as
`torch.optim.swa_utils.update_bn` does after stochastic weight averaging,
but exactly: each batch's mean and (biased) variance are combined, weighted
by the batch's size, into the mean and variance of the whole pass, instead
of a momentum average that favours the last batches.

One pass runs the model in training mode, so every BatchNormalization layer
(frozen ones too, for the pass) normalizes with the statistics of the batch
in hand, and a layer after another sees features normalized that way, as in
`update_bn` and precise BN; larger batches make that closer to inference.
Other training-mode layers (dropout, random augmentation) are active during
the pass too: give data without augmentation.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np

from keras_transfer._checks import check_integer
from keras_transfer._keras_internals.layers import flatten_layers
from keras_transfer.features.pipeline import is_dataset, numpy_batches


def recalibrate_batch_norm(model: keras.Model, data, batch_size: int = 32) -> None:
    """Sets every BatchNormalization layer's moving statistics to those of `data`.

    Args:
        model: a built model, changed in place.
        data: inputs as arrays (or a dict / list of arrays), an `(inputs,
            labels)` tuple (labels ignored), or a `tf.data.Dataset` of input
            batches or `(inputs, labels)` batches.
        batch_size: rows per batch for arrays (a dataset keeps its own).
    """
    check_integer(batch_size, "batch_size", "rows per recalibration batch", low=1)
    layers = batch_norm_layers(model)
    if not layers:
        warnings.warn(
            f"Model '{model.name}' has no BatchNormalization layer: `recalibrate_data` "
            "changes nothing; leave it `None`.",
            stacklevel=3,
        )
        return
    _refuse_renorm(layers)
    statistics = [_RunningMoments() for _ in layers]
    with _measuring(layers):
        for inputs, _ in numpy_batches(_inputs_of(data), None, batch_size):
            model(inputs, training=True)
            rows = len(keras.tree.flatten(inputs)[0])
            for layer, moments in zip(layers, statistics):
                # With momentum 0 the moving statistics are this batch's own.
                moments.add(rows, _numpy(layer.moving_mean), _numpy(layer.moving_variance))
    if statistics[0].count == 0:
        raise ValueError("`recalibrate_data` is empty: give it at least one batch of inputs.")
    for layer, moments in zip(layers, statistics):
        layer.moving_mean.assign(moments.mean.astype(_numpy(layer.moving_mean).dtype))
        layer.moving_variance.assign(moments.variance.astype(_numpy(layer.moving_variance).dtype))


def batch_norm_layers(model: keras.Model) -> list:
    """The BatchNormalization layers in `model`, at any depth, each once."""
    return [
        layer
        for layer in flatten_layers(model, include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


class _RunningMoments:
    """The exact mean and variance of a stream of batches, from each batch's own.

    Batches combine as in Chan et al.'s parallel algorithm: the spread of the
    batch means around the running mean joins the within-batch variance.
    """

    def __init__(self):
        self.count = 0
        self.mean = None
        self.variance = None

    def add(self, count: int, mean: np.ndarray, variance: np.ndarray) -> None:
        mean, variance = mean.astype(np.float64), variance.astype(np.float64)
        if self.count == 0:
            self.count, self.mean, self.variance = count, mean, variance
            return
        total = self.count + count
        delta = mean - self.mean
        new_mean = self.mean + delta * (count / total)
        self.variance = (
            self.count * self.variance + count * variance + delta**2 * (self.count * count / total)
        ) / total
        self.mean, self.count = new_mean, total


class _measuring:
    """Context in which each layer trains (frozen ones too) with momentum 0.

    Restores every layer's momentum and `trainable` flag on exit.
    """

    def __init__(self, layers):
        self.layers = layers
        self.saved = [(layer.momentum, layer.trainable) for layer in layers]

    def __enter__(self):
        for layer in self.layers:
            layer.momentum = 0.0
            layer.trainable = True
        return self

    def __exit__(self, *exc_info):
        for layer, (momentum, trainable) in zip(self.layers, self.saved):
            layer.momentum = momentum
            layer.trainable = trainable
        return False


def _refuse_renorm(layers) -> None:
    for layer in layers:
        if getattr(layer, "renorm", False):
            raise ValueError(
                f"BatchNormalization layer '{layer.name}' uses batch renormalization, whose "
                "statistics `recalibrate_data` cannot re-estimate; leave `recalibrate_data` "
                "`None` for this model."
            )


def _inputs_of(data):
    """The inputs of `data`: a dataset as it is, a tuple's first element, else `data`."""
    if is_dataset(data):
        return data
    if isinstance(data, tuple):
        if not data:
            raise ValueError("`recalibrate_data` is an empty tuple: give it inputs.")
        return data[0]
    return data


def _numpy(variable) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable))
