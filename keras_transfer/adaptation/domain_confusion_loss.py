"""`DomainConfusionLoss`: a domain classifier's loss, and how features fight it."""

from __future__ import annotations

import keras
from keras import ops

from keras_transfer._keras_internals.losses import scale_loss_for_distribution

MODES = ("adversarial", "confusion")


@keras.saving.register_keras_serializable(package="keras_transfer")
class DomainConfusionLoss(keras.losses.Loss):
    """Adapts features by making source and target indistinguishable.

    A domain classifier (the "domain head") learns to tell source features
    (label 0) from target features (label 1) by binary cross-entropy; the
    feature extractor is trained against it, so that features stop carrying
    the domain. `mode` chooses how:

    - `"adversarial"` (default): DANN (Ganin & Lempitsky, 2015). The domain
      head sits behind a gradient reversal layer, so the extractor receives
      `-adaptation_weight` times the gradient of the classifier's own loss:
      it maximises the classifier's error while the classifier minimises it.
    - `"confusion"`: deep domain confusion (Tzeng et al., 2015). The classifier
      minimises its cross-entropy with the extractor held fixed, and the
      extractor minimises `adaptation_weight` times the cross-entropy between
      the (fixed) classifier's output and the uniform distribution, i.e. it
      aims at an output of 1/2 for every example instead of at flipping the
      labels. The two objectives alternate within each step (see
      `kt.DomainAdaptationModel`).

    Pass it as `adaptation_loss=` to `kt.DomainAdaptationModel`. Called directly,
    `loss(domain_labels, domain_logits)` is the domain classifier's binary
    cross-entropy (from logits, shape `(n,)` or `(n, 1)`), and
    `loss.confusion(domain_logits)` the extractor's objective in
    `"confusion"` mode.

    Args:
        mode: `"adversarial"` or `"confusion"`.
        name: the loss's name. Defaults to `"domain_confusion"`.
        dtype: the dtype of the computation; defaults to `keras.config.floatx()`.

    Example:

    >>> import numpy as np
    >>> import keras_transfer as kt
    >>> loss = kt.DomainConfusionLoss(mode="confusion")
    >>> logits = np.zeros((4, 1))  # a classifier that cannot tell: p = 1/2
    >>> round(float(loss(np.array([0, 0, 1, 1]), logits)), 4)  # log(2)
    0.6931
    >>> round(float(loss.confusion(logits)), 4)  # the least it can be
    0.6931
    """

    def __init__(self, mode: str = "adversarial", name: str = "domain_confusion", dtype=None):
        if mode not in MODES:
            raise ValueError(
                f"`mode` must be one of {MODES} ('adversarial': DANN with gradient "
                f"reversal; 'confusion': Tzeng et al.'s uniform target), got {mode!r}."
            )
        super().__init__(name=name, reduction="sum_over_batch_size", dtype=dtype)
        self.mode = mode
        self._dtype_argument = dtype

    def call(self, domain_labels, domain_logits):
        labels, logits = _as_vectors(domain_labels, domain_logits)
        return keras.losses.binary_crossentropy(labels[:, None], logits[:, None], from_logits=True)

    def confusion(self, domain_logits):
        """Mean cross-entropy between `sigmoid(domain_logits)` and 1/2.

        At least `log(2)`, reached when the classifier says 1/2 everywhere.
        """
        logits = ops.convert_to_tensor(domain_logits, dtype=self.dtype)
        _, logits = _as_vectors(ops.zeros_like(logits), logits)
        # -(log sigmoid(z) + log sigmoid(-z)) / 2, in a form that cannot overflow.
        confusion = ops.mean(0.5 * (ops.softplus(-logits) + ops.softplus(logits)))
        # Like the classifier's own loss: divided by the replica count under
        # tf.distribute, so that the replicas' gradients sum to the global one.
        return scale_loss_for_distribution(confusion)

    def get_config(self):
        return {"mode": self.mode, "name": self.name, "dtype": self._dtype_argument}


def domain_accuracy(domain_labels, domain_logits):
    """The fraction of examples whose domain the classifier gets right."""
    labels, logits = _as_vectors(domain_labels, domain_logits)
    predicted = ops.cast(logits > 0, labels.dtype)
    return ops.mean(ops.cast(ops.equal(predicted, labels), "float32"))


def _as_vectors(domain_labels, domain_logits):
    logits = ops.convert_to_tensor(domain_logits)
    if len(logits.shape) == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if len(logits.shape) != 1:
        raise ValueError(
            "The domain head must give one logit per example (shape (n,) or "
            f"(n, 1): source vs target), got shape {tuple(domain_logits.shape)}. "
            "End it with `keras.layers.Dense(1)`, without activation."
        )
    labels = ops.reshape(ops.cast(domain_labels, logits.dtype), (-1,))
    return labels, logits
