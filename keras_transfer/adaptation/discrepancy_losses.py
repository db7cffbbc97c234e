"""`CoralLoss` and `MMDLoss`: domain discrepancies that need no discriminator."""

from __future__ import annotations

import numbers
import warnings

import keras
from keras import ops

from keras_transfer._checks import is_finite_number

# DAN's multi-kernel MMD (Long et al., 2015, and the Transfer-Learning-Library
# implementation): Gaussian kernels whose variances are 2^k times the mean
# squared distance in the batch, k = -3 ... 1.
DEFAULT_BANDWIDTH_MULTIPLIERS = (0.125, 0.25, 0.5, 1.0, 2.0)


@keras.saving.register_keras_serializable(package="keras_transfer")
class CoralLoss(keras.losses.Loss):
    """Deep CORAL: the distance between source and target feature covariances.

    Deep CORAL (Sun & Saenko, 2016) aligns the second-order statistics of the
    two domains: `||C_s - C_t||_F^2 / (4 d^2)`, where `C_s` and `C_t` are the
    (unbiased) covariance matrices of a batch of `d`-dimensional source and
    target features. Cheap, stable and free of hyperparameters; it sees only
    covariances, so it cannot align distributions that differ elsewhere
    (a rotation keeps the covariance of isotropic data, for one).

    Pass it as `adaptation_loss=` to `kt.DomainAdaptationModel`, which adds
    `adaptation_weight * CoralLoss(source_features, target_features)` to the
    task loss; or call it on any two feature batches. The batches may differ
    in size; features of rank > 2 are flattened. A covariance needs at
    least 2 rows: a batch with fewer (the last, short batch of an epoch)
    contributes 0, with a warning where its size is known when the step is
    traced.

    Args:
        name: the loss's name. Defaults to `"coral"`.
        dtype: the dtype of the computation; defaults to `keras.config.floatx()`.

    Example:

    >>> import numpy as np
    >>> import keras_transfer as kt
    >>> rng = np.random.default_rng(0)
    >>> source = rng.normal(size=(64, 3))
    >>> loss = kt.CoralLoss()
    >>> float(loss(source, source))
    0.0
    >>> float(loss(source, 3 * source)) > 0
    True
    """

    def __init__(self, name: str = "coral", dtype=None):
        # A statistic of the whole batch: one value, nothing to reduce.
        super().__init__(name=name, reduction="sum", dtype=dtype)
        self._dtype_argument = dtype

    def call(self, source_features, target_features):
        source, target = _as_matrices(source_features, target_features, self.name)
        _warn_if_too_few_rows(source, target, self.name)
        dim = ops.cast(ops.shape(source)[1], source.dtype)
        difference = _covariance(source) - _covariance(target)
        loss = ops.sum(ops.square(difference)) / (4.0 * dim * dim)
        both_have_rows = ops.logical_and(ops.shape(source)[0] > 1, ops.shape(target)[0] > 1)
        return ops.where(both_have_rows, loss, ops.zeros_like(loss))

    def get_config(self):
        return {"name": self.name, "dtype": self._dtype_argument}


@keras.saving.register_keras_serializable(package="keras_transfer")
class MMDLoss(keras.losses.Loss):
    """Maximum mean discrepancy between source and target features.

    The squared MMD (Gretton et al., 2012) with a mixture of Gaussian kernels,
    as in DAN (Long et al., 2015): `mean k(s, s') + mean k(t, t') - 2 mean
    k(s, t)` over a batch of source features `s` and target features `t`
    (the biased estimate; batches may differ in size). It is zero when the
    two batches come from one distribution and, unlike CORAL, sees every
    moment of the distributions, at the cost of `O((n_s + n_t)^2)` kernel
    evaluations per batch.

    The kernel is the average of Gaussians `exp(-||x - y||^2 / (2 sigma^2))`.
    By default each `sigma^2` is a multiple (1/8, 1/4, 1/2, 1 and 2) of half
    the mean squared distance between the batch's features (computed without
    gradient), so the loss follows the scale of the features as they train;
    give `bandwidths` to fix the `sigma`s instead.

    Args:
        bandwidths: optional fixed kernel widths `sigma` (numbers > 0).
        bandwidth_multipliers: the multiples of the batch's mean squared
            distance used when `bandwidths` is not given. Defaults to
            `(0.125, 0.25, 0.5, 1.0, 2.0)`.
        name: the loss's name. Defaults to `"mmd"`.
        dtype: the dtype of the computation; defaults to `keras.config.floatx()`.

    Example:

    >>> import numpy as np
    >>> import keras_transfer as kt
    >>> rng = np.random.default_rng(0)
    >>> source = rng.normal(size=(64, 2))
    >>> loss = kt.MMDLoss()
    >>> near = float(loss(source, rng.normal(size=(48, 2))))
    >>> far = float(loss(source, rng.normal(size=(48, 2)) + 2.0))
    >>> near < 0.05 < far
    True
    """

    def __init__(
        self,
        bandwidths=None,
        bandwidth_multipliers=DEFAULT_BANDWIDTH_MULTIPLIERS,
        name: str = "mmd",
        dtype=None,
    ):
        super().__init__(name=name, reduction="sum", dtype=dtype)
        self._dtype_argument = dtype
        self.bandwidths = _positive_numbers(bandwidths, "bandwidths")
        self.bandwidth_multipliers = _positive_numbers(
            bandwidth_multipliers, "bandwidth_multipliers"
        )
        if self.bandwidths is None and self.bandwidth_multipliers is None:
            raise ValueError("MMDLoss needs `bandwidths` or `bandwidth_multipliers`.")

    def call(self, source_features, target_features):
        source, target = _as_matrices(source_features, target_features, self.name)
        features = ops.concatenate([source, target], axis=0)
        distances = _squared_distances(features)
        if self.bandwidths is not None:
            variances = [sigma * sigma for sigma in self.bandwidths]
        else:
            # Half the mean squared distance is the variance of a Gaussian
            # kernel that sits at the typical distance of the batch.
            count = ops.cast(ops.shape(features)[0], features.dtype)
            mean_distance = ops.stop_gradient(ops.sum(distances) / (count * count - count))
            # Identical features (a collapsed extractor) have distance 0: the
            # kernel is then 1 everywhere and the discrepancy 0, not 0/0.
            mean_distance = ops.maximum(mean_distance, keras.config.epsilon())
            variances = [0.5 * mean_distance * m for m in self.bandwidth_multipliers]
        kernel = sum(ops.exp(-distances / (2.0 * variance)) for variance in variances)
        kernel = kernel / float(len(variances))
        n_source = ops.shape(source)[0]
        source_source = ops.mean(kernel[:n_source, :n_source])
        target_target = ops.mean(kernel[n_source:, n_source:])
        source_target = ops.mean(kernel[:n_source, n_source:])
        return source_source + target_target - 2.0 * source_target

    def get_config(self):
        return {
            "bandwidths": self.bandwidths,
            "bandwidth_multipliers": self.bandwidth_multipliers,
            "name": self.name,
            "dtype": self._dtype_argument,
        }


def _as_matrices(source_features, target_features, name: str):
    source = _flatten(source_features)
    target = _flatten(target_features)
    if source.shape[1] is not None and target.shape[1] is not None:
        if source.shape[1] != target.shape[1]:
            raise ValueError(
                f"{name}: source and target features must have the same size, got "
                f"{tuple(source_features.shape)} and {tuple(target_features.shape)}. "
                "Compute both with the same feature extractor."
            )
    return source, target


def _warn_if_too_few_rows(source, target, name: str):
    for features, domain in ((source, "source"), (target, "target")):
        if features.shape[0] is not None and features.shape[0] < 2:
            warnings.warn(
                f"{name}: a batch of {features.shape[0]} {domain} feature row(s) has "
                "no covariance; this batch's loss is 0. Use batches of at least 2 "
                "(e.g. `drop_remainder=True` for the last batch).",
                stacklevel=3,
            )


def _flatten(features):
    if len(features.shape) < 2:
        raise ValueError(
            f"Domain discrepancies take a batch of feature vectors (rank >= 2), "
            f"got shape {tuple(features.shape)}."
        )
    if len(features.shape) == 2:
        return features
    return ops.reshape(features, (ops.shape(features)[0], -1))


def _covariance(features):
    count = ops.cast(ops.shape(features)[0], features.dtype)
    centered = features - ops.mean(features, axis=0, keepdims=True)
    # max(): a one-row batch gives zeros, not 0/0 (its loss is then masked).
    return ops.matmul(ops.transpose(centered), centered) / ops.maximum(count - 1.0, 1.0)


def _squared_distances(features):
    norms = ops.sum(ops.square(features), axis=1)
    products = ops.matmul(features, ops.transpose(features))
    return ops.maximum(norms[:, None] + norms[None, :] - 2.0 * products, 0.0)


def _positive_numbers(values, what: str):
    if values is None:
        return None
    if isinstance(values, numbers.Real):
        values = [values]
    values = list(values)
    if not values or not all(is_finite_number(v) and v > 0 for v in values):
        raise ValueError(
            f"`{what}` must be a non-empty list of finite numbers > 0, got {values!r}."
        )
    return [float(v) for v in values]
