"""`kt.average_weights`: the uniform model soup."""

from __future__ import annotations

import keras

from keras_transfer._checks import check_integer
from keras_transfer.weight_averaging._model_copy import copy_with_values
from keras_transfer.weight_averaging._weight_arithmetic import average
from keras_transfer.weight_averaging._weight_matching import (
    check_matching,
    check_models,
    float_flags,
    model_list,
)


def average_weights(models, recalibrate_data=None, *, batch_size: int = 32) -> keras.Model:
    """A new model whose every weight is the mean of the models' (a uniform soup).

    Model soups (Wortsman et al., ICML 2022): models fine-tuned from one
    starting point with different hyperparameters or seeds often lie in one
    basin of the loss, and the average of their weights is frequently more
    accurate and more robust than each of them, at the cost of a single
    model at inference. A uniform soup can be hurt by an ingredient far from
    the others; `kt.greedy_soup` adds ingredients only while validation
    accuracy does not drop.

    The models must match weight for weight (as for `kt.wise_ft`: same
    weights in the same order, paths up to Keras' automatic layer numbering,
    shapes, dtypes, trainable-capable weights). The result is rebuilt from
    `models[0]`'s config, takes its frozen layers and its non-float weights
    (integer counters are copied, not averaged), and is not compiled: no
    optimizer or optimizer state comes along. The models are left unchanged.

    BatchNormalization moving statistics are not linear in the weights: the
    mean of several models' statistics is not the statistics of the mean
    model. Without `recalibrate_data` they are averaged like any weight; with
    it, every BatchNormalization layer's moving mean and variance are reset
    and measured again on the new model (like
    `torch.optim.swa_utils.update_bn`, but the exact mean and variance of the
    whole pass rather than a momentum average). The pass runs the model in
    training mode, so each BatchNormalization layer normalizes with the batch
    statistics during it, and dropout or augmentation layers are active: give
    plain training inputs, in batches as large as memory allows.

    Args:
        models: a list of two or more built models to average.
        recalibrate_data: optional inputs for the BatchNormalization pass:
            arrays (or a dict / list of arrays), an `(inputs, labels)` tuple
            (labels are ignored), or a `tf.data.Dataset` of batches. Defaults
            to `None`.
        batch_size: rows per recalibration batch for arrays. Defaults to 32.

    Returns:
        A new, uncompiled `keras.Model`.

    Example:

    >>> import keras
    >>> import keras_transfer as kt
    >>> def classifier():
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="head")])
    >>> models = [classifier() for _ in range(3)]
    >>> for bias, model in enumerate(models):
    ...     _ = model.get_layer("head").bias.assign([bias, -bias])
    >>> soup = kt.average_weights(models)
    >>> soup.get_layer("head").bias.numpy().tolist()
    [1.0, -1.0]
    """
    models = model_list(models, "kt.average_weights")
    check_integer(batch_size, "batch_size", "rows per recalibration batch", low=1)
    names = [f"models[{index}]" for index in range(len(models))]
    check_models(models, names)
    check_matching(models, names)
    values = average([model.get_weights() for model in models], float_flags(models[0]))
    return copy_with_values(models[0], names[0], values, recalibrate_data, batch_size)
