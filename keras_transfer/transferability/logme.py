"""`kt.transferability.logme`: the log maximum evidence of a linear model on
frozen features (You et al., ICML 2021)."""

from __future__ import annotations

import numpy as np

from keras_transfer._checks import check_integer, check_number
from keras_transfer.transferability._validation import check_classification, one_hot

# Floors that keep the update finite when a class is fitted exactly (zero
# residual) or not at all (zero weights); far below any real sum of squares.
_TINY = 1e-300


def logme(
    features,
    labels,
    *,
    tolerance: float = 1e-10,
    max_iterations: int = 1000,
) -> float:
    """LogME: how well a Bayesian linear model on frozen features explains the labels.

    Scores a pretrained backbone for a classification task from its frozen
    features alone, in seconds, without fine-tuning: the higher the score,
    the better the backbone is expected to transfer (You et al., "LogME:
    Practical Assessment of Pre-trained Models for Transfer Learning", ICML
    2021, https://arxiv.org/abs/2102.11005).

    For each class `c`, the one-hot column `y` (N examples) is modelled as
    `y = F w + noise`, with features `F` (N x D), a prior `w ~ N(0, 1/alpha I)`
    and noise precision `beta`. With `A = alpha I + beta F^T F`, the posterior
    mean `m = beta A^-1 F^T y` and `gamma = sum_i beta s_i / (alpha + beta s_i)`
    (`s_i` the eigenvalues of `F^T F`), the evidence is maximised by
    MacKay's fixed-point iteration `alpha <- gamma / |m|^2`,
    `beta <- (N - gamma) / |y - F m|^2`, and its value is

        log p(y | F) = D/2 log alpha + N/2 log beta - 1/2 log|A|
                       - beta/2 |y - F m|^2 - alpha/2 |m|^2 - N/2 log 2 pi.

    LogME is the mean over classes of `log p(y | F) / N`. The iteration runs
    for all classes at once in the basis of the singular vectors of `F`
    (one SVD), each step costing O(min(N, D) x classes); it stops when every
    class's `alpha / beta` moves by less than `tolerance` (relative), which
    pins the evidence far more tightly than the reference code's 1%.

    Args:
        features: `(examples, dimensions)` frozen features of the labelled
            target data (a backbone's pooled outputs), not normalised.
        labels: `(examples,)` integer class ids; classes are the distinct
            values present.
        tolerance: relative change of `alpha / beta` at which the iteration
            stops. Defaults to `1e-10`.
        max_iterations: most steps of the iteration. Defaults to `1000`
            (it usually settles in tens).

    Returns:
        The score, a Python float (an average log-likelihood per example:
        compare scores of backbones on the same data, not across datasets).

    Example:

    >>> import numpy as np
    >>> import keras_transfer as kt
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 3, size=300)
    >>> informative = np.eye(3)[labels] + 0.3 * rng.normal(size=(300, 3))
    >>> noise = rng.normal(size=(300, 3))
    >>> kt.transferability.logme(informative, labels) > kt.transferability.logme(noise, labels)
    True
    """
    tolerance = check_number(tolerance, "tolerance", "relative change", low=0, low_open=True)
    max_iterations = check_integer(max_iterations, "max_iterations", low=1)
    features, class_index, classes = check_classification(features, labels)
    targets = one_hot(class_index, len(classes))
    evidences = _class_evidences(features, targets, tolerance, max_iterations)
    return float(np.mean(evidences))


def _class_evidences(features, targets, tolerance, max_iterations) -> np.ndarray:
    """The maximum evidence per example of each target column, `(columns,)`."""
    examples, _ = features.shape
    left, singular_values, _ = np.linalg.svd(features, full_matrices=False)
    rank = int(np.sum(singular_values > _rank_threshold(features, singular_values)))
    sigma = singular_values[:rank, None] ** 2  # Nonzero eigenvalues of F^T F, (rank, 1).
    projections = left[:, :rank].T @ targets  # y in the singular basis, (rank, columns).
    projected_squares = projections**2
    total_squares = (targets**2).sum(axis=0)
    # |y|^2 outside the span of the features: the residual no weights can fit.
    outside = np.maximum(total_squares - projected_squares.sum(axis=0), 0.0)
    alpha = np.ones(targets.shape[1])
    beta = np.ones(targets.shape[1])
    for _ in range(max_iterations):
        ratio = alpha / beta
        gamma, weights_square, residual_square = _statistics(
            sigma, projected_squares, outside, ratio
        )
        # No features at all (rank 0): alpha has no effect; keep it finite.
        alpha = np.where(gamma > 0, gamma / np.maximum(weights_square, _TINY), 1.0)
        beta = (examples - gamma) / np.maximum(residual_square, _TINY)
        if np.all(np.abs(alpha / beta - ratio) <= tolerance * ratio):
            break
    evidence = _profile_evidence(sigma, projected_squares, outside, alpha / beta, examples)
    # Where the features explain nothing of a class, the iteration walks
    # alpha / beta towards infinity (weights -> 0) without arriving; the
    # evidence there tends to that of pure noise, y ~ N(0, |y|^2 / N).
    no_weights = _log_likelihood(examples, total_squares, 0.0)
    return np.maximum(evidence, no_weights) / examples


def _statistics(sigma, projected_squares, outside, ratio):
    """`gamma`, `|m|^2` and `|y - F m|^2` per column for `alpha / beta = ratio`."""
    shrink = sigma + ratio[None, :]
    gamma = (sigma / shrink).sum(axis=0)
    weights_square = (sigma * projected_squares / shrink**2).sum(axis=0)
    residual_square = ((ratio[None, :] / shrink) ** 2 * projected_squares).sum(axis=0) + outside
    return gamma, weights_square, residual_square


def _profile_evidence(sigma, projected_squares, outside, ratio, examples):
    """The evidence at `alpha / beta = ratio`, maximised over `beta`.

    The evidence is the Gaussian likelihood `y ~ N(0, (I + F F^T / ratio) / beta)`:
    `log|A|` and the two squared norms of the docstring's formula combine into
    `log|I + F F^T / ratio|` and `q = y^T (I + F F^T / ratio)^-1 y`, whose best
    `beta` is `N / q`. At the fixed point (where `beta = (N - gamma) / |y - F m|^2`
    equals `N / q`) this is the formula's value; written this way it stays
    finite where `beta` grows without bound.
    """
    shrink = sigma + ratio[None, :]
    quadratic = (ratio[None, :] * projected_squares / shrink).sum(axis=0) + outside
    log_det = np.log(shrink / ratio[None, :]).sum(axis=0)
    return _log_likelihood(examples, quadratic, log_det)


def _log_likelihood(examples, quadratic, log_det):
    quadratic = np.maximum(quadratic, _TINY)
    return (
        examples / 2 * np.log(examples / quadratic)
        - examples / 2
        - log_det / 2
        - examples / 2 * np.log(2 * np.pi)
    )


def _rank_threshold(features, singular_values) -> float:
    """numpy's `matrix_rank` tolerance: smaller singular values are rounding noise."""
    if not singular_values.size:
        return 0.0
    return singular_values[0] * max(features.shape) * np.finfo(np.float64).eps
