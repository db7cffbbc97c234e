"""`kt.transferability.leep`: the log expected empirical prediction of a source
classifier on the target labels (Nguyen et al., ICML 2020)."""

from __future__ import annotations

import numpy as np

from keras_transfer.transferability._validation import (
    check_classes,
    check_features,
    check_labels,
    check_same_length,
    one_hot,
)

# How far a row of probabilities may stray from summing to 1 (float16 or
# float32 softmax outputs), before it is taken for logits.
_SUM_TOLERANCE = 1e-3


def leep(source_probabilities, labels) -> float:
    """LEEP: how well the source model's own class predictions predict the target labels.

    Scores a pretrained classifier (its head included) for a new task from
    one pass over the target data: the higher, the better it is expected to
    transfer (Nguyen et al., "LEEP: A New Measure to Evaluate Transferability
    of Learned Representations", ICML 2020, https://arxiv.org/abs/2002.12462).

    With `theta(x_i)` the source model's probabilities over its source
    classes `z` for target example `x_i` with label `y_i`, the empirical joint
    distribution of target and source labels is
    `P(y, z) = 1/N sum_{i: y_i = y} theta(x_i)_z`, its conditional
    `P(y | z) = P(y, z) / sum_y' P(y', z)`, and

        LEEP = 1/N sum_i log( sum_z P(y_i | z) theta(x_i)_z ),

    the mean log-likelihood of the "expected empirical predictor" that
    relabels source predictions into target classes. It is at most 0; a
    source class that no example puts probability on is left out.

    Args:
        source_probabilities: `(examples, source_classes)` probabilities
            (softmax outputs, rows summing to 1) of the pretrained source
            classifier on the target examples. Not logits: apply
            `keras.ops.softmax` first.
        labels: `(examples,)` integer target class ids.

    Returns:
        The score, a Python float <= 0.

    Example:

    >>> import numpy as np
    >>> import keras_transfer as kt
    >>> labels = np.array([0, 0, 1, 1, 2, 2])
    >>> aligned = np.eye(3)[labels] * 0.9 + 0.1 / 3
    >>> uniform = np.full((6, 3), 1 / 3)
    >>> kt.transferability.leep(aligned, labels) > kt.transferability.leep(uniform, labels)
    True
    """
    probabilities = _check_probabilities(source_probabilities)
    labels = check_labels(labels)
    check_same_length(probabilities, labels, "source_probabilities")
    classes, class_index = np.unique(labels, return_inverse=True)
    check_classes(len(labels), len(classes))
    joint = one_hot(class_index, len(classes)).T @ probabilities / len(labels)  # (C_t, C_s)
    source_marginal = joint.sum(axis=0, keepdims=True)
    conditional = np.divide(
        joint, source_marginal, out=np.zeros_like(joint), where=source_marginal > 0
    )
    expected = np.sum(probabilities * conditional[class_index], axis=1)
    return float(np.mean(np.log(expected)))


def _check_probabilities(source_probabilities) -> np.ndarray:
    probabilities = check_features(source_probabilities, "source_probabilities")
    sums = probabilities.sum(axis=1)
    if probabilities.min() < 0 or not np.allclose(sums, 1.0, atol=_SUM_TOLERANCE):
        raise ValueError(
            "`source_probabilities` must be probabilities: non-negative rows that sum to 1 "
            f"(got values in [{probabilities.min():.3g}, {probabilities.max():.3g}], row sums "
            f"in [{sums.min():.3g}, {sums.max():.3g}]). For logits pass "
            "`keras.ops.softmax(logits)`."
        )
    return probabilities / sums[:, None]
