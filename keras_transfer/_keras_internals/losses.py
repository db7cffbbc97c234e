"""Losses: scaling under a distribution strategy, and a model's compiled loss.

A training model that writes its own `compute_loss` (distillation, domain
adaptation) must add its terms the way Keras' own `compute_loss` adds the
compiled loss and the layers' losses, or training under `tf.distribute`
would weigh them differently from one device.
"""

from __future__ import annotations

import keras
from keras.src.losses import loss as _keras_loss


def scale_loss_for_distribution(value):
    """`value` divided by the number of replicas under a `tf.distribute` strategy.

    A loss computed on one replica's batch is divided by the replica count,
    so that the replicas' gradients sum to the gradient of the global loss;
    Keras does this to every `keras.losses.Loss` it reduces. Use it for a
    loss term that is not a reduced `keras.losses.Loss` (a hand-written mean,
    a batch statistic). The identity outside `tf.distribute` and on the JAX
    and PyTorch backends. Relies on
    `keras.src.losses.loss.scale_loss_for_distribution`.
    """
    return _keras_loss.scale_loss_for_distribution(value)


def unscale_loss_for_distribution(value):
    """Undoes `scale_loss_for_distribution`: the loss of the global batch.

    What a loss metric should record, so that logs read the same on any
    number of replicas. Relies on
    `keras.src.losses.loss.unscale_loss_for_distribution`.
    """
    return _keras_loss.unscale_loss_for_distribution(value)


def compiled_loss(model: keras.Model):
    """The loss `model.compile(loss=...)` built, or `None` without one.

    A callable `(y_true, y_pred, sample_weight) -> scalar`: the compiled loss
    (or losses, with their `loss_weights`) reduced and scaled for
    distribution as in `Model.compute_loss`. Relies on `Model._compile_loss`,
    which `compile` sets (to `None` when no loss is given).
    """
    return getattr(model, "_compile_loss", None)


def compiled_loss_has_run(model: keras.Model) -> bool:
    """Whether the model's compiled loss has been computed on a batch yet.

    False without a compiled loss, and after `compile` until the first batch
    with targets reaches it. Relies on the compiled loss (`Model._compile_loss`)
    setting `built` on its first call.
    """
    loss = compiled_loss(model)
    return loss is not None and bool(loss.built)


def aggregate_additional_loss(model: keras.Model, loss):
    """One loss of `model.losses` (regularisation, `add_loss`) as Keras adds it.

    The scalar that `Model.compute_loss` adds to the total for it (summed,
    cast to a float dtype). Relies on `Trainer._aggregate_additional_loss`.
    """
    return model._aggregate_additional_loss(loss)
