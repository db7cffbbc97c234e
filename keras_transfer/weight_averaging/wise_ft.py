"""`kt.wise_ft`: interpolating the weights of a model before and after fine-tuning."""

from __future__ import annotations

import keras

from keras_transfer._checks import check_integer, check_number
from keras_transfer.weight_averaging._model_copy import copy_with_values
from keras_transfer.weight_averaging._weight_arithmetic import interpolate
from keras_transfer.weight_averaging._weight_matching import (
    check_matching,
    check_models,
    float_flags,
)


def wise_ft(
    start_model: keras.Model,
    fine_tuned_model: keras.Model,
    alpha: float = 0.5,
    recalibrate_data=None,
    *,
    batch_size: int = 32,
) -> keras.Model:
    """A new model whose weights lie between a model's before and after fine-tuning.

    WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR
    2022): fine-tuning raises accuracy on the target distribution but can
    lower it under distribution shift; interpolating every weight,
    `(1 - alpha) * start + alpha * fine_tuned`, often keeps most of the
    in-distribution gain while recovering robustness. `start_model` is the
    model before fine-tuning: for a transfer-learning recipe usually the
    frozen backbone with the head trained on its features (the linear probe),
    and `fine_tuned_model` the same model after the backbone was unfrozen and
    trained. Sweep `alpha` on held-out data, including shifted data if you
    have it.

    The two models must match weight for weight: the same number of weights,
    in the same order, with the same paths (up to Keras' automatic layer
    numbering), shapes, dtypes and trainable-capable weights (freezing may
    differ: a linear probe's backbone is frozen). The new model is rebuilt
    from `fine_tuned_model`'s config, takes its frozen layers, and is not
    compiled (no optimizer or optimizer state comes along): compile it to
    evaluate or train it. The inputs are left unchanged. Floating-point
    weights are interpolated in float64 and rounded once; other weights
    (integer counters) are copied from `fine_tuned_model`.

    BatchNormalization moving statistics are interpolated like the other
    weights unless `recalibrate_data` is given; they are not linear in the
    weights, so for a model with BatchNormalization pass some training
    inputs to measure them again on the new model (exact mean and variance
    over one pass in training mode; see `kt.average_weights`).

    Args:
        start_model: the model before fine-tuning (built).
        fine_tuned_model: the model after fine-tuning; the result takes its
            architecture.
        alpha: the fine-tuned model's share of each weight, in [0, 1]:
            0 gives `start_model`'s weights, 1 `fine_tuned_model`'s.
            Defaults to 0.5.
        recalibrate_data: optional inputs on which to re-estimate every
            BatchNormalization layer's moving statistics: arrays (or a dict /
            list of arrays), an `(inputs, labels)` tuple, or a
            `tf.data.Dataset` of batches. Defaults to `None` (interpolate them).
        batch_size: rows per recalibration batch for arrays. Defaults to 32.

    Returns:
        A new, uncompiled `keras.Model`.

    Example:

    >>> import keras
    >>> import keras_transfer as kt
    >>> def classifier():
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="head")])
    >>> start, fine_tuned = classifier(), classifier()
    >>> start.set_weights([w * 0 for w in start.get_weights()])
    >>> fine_tuned.set_weights([w * 0 + 1 for w in fine_tuned.get_weights()])
    >>> middle = kt.wise_ft(start, fine_tuned, alpha=0.25)
    >>> middle.get_layer("head").bias.numpy().tolist()
    [0.25, 0.25]
    """
    alpha = check_number(
        alpha,
        "alpha",
        "the fine-tuned model's share of each weight: 0 keeps start_model, 1 fine_tuned_model",
        low=0,
        high=1,
        type_error=TypeError,
    )
    check_integer(batch_size, "batch_size", "rows per recalibration batch", low=1)
    models, names = [start_model, fine_tuned_model], ["start_model", "fine_tuned_model"]
    check_models(models, names)
    check_matching(models, names)
    values = interpolate(
        start_model.get_weights(),
        fine_tuned_model.get_weights(),
        alpha,
        float_flags(fine_tuned_model),
    )
    return copy_with_values(fine_tuned_model, names[1], values, recalibrate_data, batch_size)
