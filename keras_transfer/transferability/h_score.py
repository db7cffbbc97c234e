"""`kt.transferability.h_score`: how much of the features' variance the class
means explain (Bao et al., ICIP 2019)."""

from __future__ import annotations

import warnings

import numpy as np

from keras_transfer.transferability._validation import check_classification, one_hot


def h_score(features, labels) -> float:
    """H-score: the between-class covariance of the features, in units of their covariance.

    Scores a pretrained backbone for a classification task from its frozen
    features: the higher, the better it is expected to transfer (Bao et al.,
    "An Information-Theoretic Approach to Transferability in Task Transfer
    Learning", IEEE ICIP 2019). It is the
    optimal value of the one-layer "H-score" objective, and tends to favour
    features in which the classes are linearly separable.

    With `f` the features and `E[f | y]` each example's class mean,

        H(f) = tr( cov(f)^+ cov(E[f | y]) ),

    `cov` the sample covariance over examples and `^+` the pseudo-inverse,
    so that redundant or constant feature dimensions do not break it:
    directions whose singular value is below numpy's `matrix_rank` cut-off
    (largest x `max(examples, dimensions)` x the machine epsilon of the
    features' own dtype, float32's for float32 features) count as absent.
    It lies between 0 and `min(dimensions, classes - 1)`. With no more
    examples than dimensions the features span every centred example, and
    the score is exactly `classes - 1` whatever the features: it then ranks
    nothing, and a warning says so (score on more examples than dimensions,
    or reduce the dimensions first, e.g. by PCA).

    Args:
        features: `(examples, dimensions)` frozen features of the labelled
            target data.
        labels: `(examples,)` integer class ids.

    Returns:
        The score, a Python float.

    Example:

    >>> import numpy as np
    >>> import keras_transfer as kt
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 3, size=300)
    >>> informative = np.eye(3)[labels] + 0.3 * rng.normal(size=(300, 3))
    >>> noise = rng.normal(size=(300, 3))
    >>> kt.transferability.h_score(informative, labels) > kt.transferability.h_score(noise, labels)
    True
    """
    precision = _precision(features)
    features, class_index, classes = check_classification(features, labels)
    centred = features - features.mean(axis=0)
    members = one_hot(class_index, len(classes))
    class_means = (members.T @ centred) / members.sum(axis=0)[:, None]
    between = class_means[class_index]
    # cov(f)^+ from the SVD of the centred features, cov(f) = V S^2 V^T / (N - 1);
    # the 1/(N - 1) of both covariances cancels in the trace.
    _, singular_values, right = np.linalg.svd(centred, full_matrices=False)
    cutoff = singular_values[0] * max(centred.shape) * precision if singular_values.size else 0
    kept = singular_values > cutoff
    if np.count_nonzero(kept) >= len(centred) - 1:
        warnings.warn(
            f"h_score: the features' rank ({np.count_nonzero(kept)}) reaches the number of "
            f"examples minus one ({len(centred)} examples), so the score is classes - 1 "
            "for any features and ranks nothing. Score on more examples than feature "
            "dimensions, or reduce the dimensions first (e.g. PCA).",
            stacklevel=2,
        )
    whitened = (between @ right[kept].T) / singular_values[kept]
    return float(np.sum(whitened**2))


def _precision(features) -> float:
    """The rounding level of the features as given: float32 features have
    directions of variance ~1e-14 made of rounding alone, which a float64
    cut-off would invert and count."""
    dtype = np.asarray(features).dtype
    if np.issubdtype(dtype, np.floating) and np.finfo(dtype).bits < 64:
        return float(np.finfo(dtype).eps)
    return float(np.finfo(np.float64).eps)
