"""`kt.transferability.nce`: the negative conditional entropy of the target
labels given the source labels (Tran et al., ICCV 2019)."""

from __future__ import annotations

import numpy as np

from keras_transfer.transferability._validation import (
    check_classes,
    check_labels,
    check_same_length,
)


def nce(source_labels, labels) -> float:
    """NCE: how predictable the target labels are from the source model's labels.

    Scores a pretrained classifier for a new task from its hard predictions
    on the target data: the higher (the closer to 0), the better it is
    expected to transfer (Tran, Nguyen and Hassner, "Transferability and
    Hardness of Supervised Classification Tasks", ICCV 2019,
    https://arxiv.org/abs/1908.08142).

    With `z_i` the source label the pretrained model predicts for target
    example `i` (its argmax) and `y_i` the target label, the empirical joint
    distribution `P(y, z) = #{i: y_i = y, z_i = z} / N` gives

        NCE = -H(Y | Z) = sum_{y, z} P(y, z) log( P(y, z) / P(z) ),

    at most 0, and 0 exactly when each source label determines the target
    label.

    Args:
        source_labels: `(examples,)` integer source classes predicted by the
            pretrained model (e.g. `source_probabilities.argmax(axis=1)`).
        labels: `(examples,)` integer target class ids.

    Returns:
        The score, a Python float <= 0.

    Example:

    >>> import numpy as np
    >>> import keras_transfer as kt
    >>> labels = np.array([0, 0, 1, 1, 2, 2])
    >>> kt.transferability.nce(np.array([5, 5, 7, 7, 9, 9]), labels)
    0.0
    >>> round(kt.transferability.nce(np.array([5, 7, 5, 7, 5, 7]), labels), 4)
    -1.0986
    """
    source = check_labels(source_labels, "source_labels")
    labels = check_labels(labels)
    check_same_length(source, labels, "source_labels")
    target_classes, target_index = np.unique(labels, return_inverse=True)
    check_classes(len(labels), len(target_classes))
    source_classes, source_index = np.unique(source, return_inverse=True)
    counts = np.zeros((len(source_classes), len(target_classes)))
    np.add.at(counts, (source_index, target_index), 1.0)
    joint = counts / len(labels)
    source_marginal = joint.sum(axis=1, keepdims=True)  # Every source class occurs.
    present = joint > 0
    return float(np.sum(joint[present] * np.log((joint / source_marginal)[present])))
