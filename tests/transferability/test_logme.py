import numpy as np
import pytest
from scipy import optimize

import keras_transfer as kt


def slow_logme(features, labels, iterations=10_000):
    """LogME straight from the paper: the fixed-point iteration on full matrices, one class
    at a time, no SVD."""
    features = features.astype(np.float64)
    examples, dimensions = features.shape
    gram = features.T @ features
    identity = np.eye(dimensions)
    evidences = []
    for label in np.unique(labels):
        target = (labels == label).astype(np.float64)
        alpha, beta = 1.0, 1.0

        def posterior(alpha, beta, target=target):
            precision = alpha * identity + beta * gram
            mean = beta * np.linalg.solve(precision, features.T @ target)
            return precision, mean

        for _ in range(iterations):
            precision, mean = posterior(alpha, beta)
            gamma = dimensions - alpha * np.trace(np.linalg.inv(precision))
            new_alpha = gamma / (mean @ mean)
            new_beta = (examples - gamma) / np.sum((target - features @ mean) ** 2)
            done = abs(new_alpha / new_beta - alpha / beta) < 1e-13 * alpha / beta
            alpha, beta = new_alpha, new_beta
            if done:
                break
        else:
            raise AssertionError("the reference did not converge: choose other test data")
        precision, mean = posterior(alpha, beta)
        evidence = (
            dimensions / 2 * np.log(alpha)
            + examples / 2 * np.log(beta)
            - np.linalg.slogdet(precision)[1] / 2
            - beta / 2 * np.sum((target - features @ mean) ** 2)
            - alpha / 2 * mean @ mean
            - examples / 2 * np.log(2 * np.pi)
        )
        evidences.append(evidence / examples)
    return np.mean(evidences)


def direct_max_evidence(features, labels):
    """The maximum over (alpha, beta) of the marginal likelihood y ~ N(0, I/beta + F F^T/alpha),
    found by a general-purpose optimiser on the N x N covariance: no fixed point at all."""
    features = features.astype(np.float64)
    examples = len(features)
    # The covariance in the eigenbasis of F F^T: exact, however ill-conditioned.
    eigenvalues, eigenvectors = np.linalg.eigh(features @ features.T)
    eigenvalues = np.maximum(eigenvalues, 0.0)
    evidences = []
    for label in np.unique(labels):
        target = (labels == label).astype(np.float64)
        rotated_squares = (eigenvectors.T @ target) ** 2

        def negative_log_likelihood(logs, rotated_squares=rotated_squares):
            variances = np.exp(-logs[1]) + eigenvalues * np.exp(-logs[0])
            log_det = np.sum(np.log(variances))
            quadratic = np.sum(rotated_squares / variances)
            return (examples * np.log(2 * np.pi) + log_det + quadratic) / 2

        best = optimize.minimize(
            negative_log_likelihood,
            x0=[0.0, 0.0],
            method="L-BFGS-B",
            bounds=[(-30, 40), (-30, 30)],
            options={"ftol": 1e-15, "gtol": 1e-10},
        )
        evidences.append(-best.fun / examples)
    return np.mean(evidences)


def classes_data(examples, dimensions, classes=4, signal=1.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=examples)
    features = rng.normal(size=(examples, dimensions))
    features[:, :classes] += signal * np.eye(classes)[labels]
    return features.astype("float32"), labels


@pytest.mark.parametrize(
    "examples, dimensions, classes, signal",
    [(200, 12, 4, 1.0), (40, 60, 3, 2.0), (50, 50, 4, 3.0)],
    ids=["tall", "wide", "square"],
)
def test_matches_the_full_matrix_evidence_maximisation(examples, dimensions, classes, signal):
    features, labels = classes_data(examples, dimensions, classes, signal)
    assert kt.transferability.logme(features, labels) == pytest.approx(
        slow_logme(features, labels), abs=1e-6
    )


@pytest.mark.parametrize("examples, dimensions", [(120, 8), (30, 45)], ids=["tall", "wide"])
def test_equals_the_maximum_of_the_marginal_likelihood(examples, dimensions):
    # The wide case has classes whose best weights are zero (alpha -> infinity): the fixed
    # point never arrives there, the score must still be the supremum.
    features, labels = classes_data(examples, dimensions, signal=0.7)
    assert kt.transferability.logme(features, labels) == pytest.approx(
        direct_max_evidence(features, labels), abs=1e-6
    )


def test_matches_on_rank_deficient_features():
    features, labels = classes_data(120, 6)
    # Repeated and constant columns: F^T F is singular.
    features = np.concatenate([features, features[:, :3], np.ones((120, 2))], axis=1)
    assert kt.transferability.logme(features, labels) == pytest.approx(
        slow_logme(features, labels), abs=1e-6
    )


def test_a_stronger_signal_scores_higher():
    scores = [
        kt.transferability.logme(*classes_data(300, 10, signal=signal))
        for signal in (0.0, 0.5, 1.0, 2.0)
    ]
    assert scores == sorted(scores)
    assert scores[-1] - scores[0] > 0.1


def test_class_ids_and_example_order_do_not_matter():
    features, labels = classes_data(150, 8)
    order = np.random.default_rng(1).permutation(150)
    renamed = np.array([3, 7, 11, 20])[labels]
    score = kt.transferability.logme(features, labels)
    assert kt.transferability.logme(features[order], renamed[order]) == pytest.approx(score)


def test_all_zero_features_score_as_pure_noise():
    _, labels = classes_data(100, 4)
    score = kt.transferability.logme(np.zeros((100, 4)), labels)
    # No features: each one-hot column is N(0, 1/beta) noise with beta = N / |y|^2.
    counts = np.bincount(labels)
    expected = np.mean(0.5 * np.log(100 / counts) - 0.5 - 0.5 * np.log(2 * np.pi))
    assert score == pytest.approx(expected, abs=1e-9)


def test_returns_a_python_float():
    assert type(kt.transferability.logme(*classes_data(50, 3, classes=3))) is float


def test_bad_iteration_settings_are_refused():
    features, labels = classes_data(50, 3, classes=3)
    with pytest.raises(ValueError, match="tolerance"):
        kt.transferability.logme(features, labels, tolerance=0)
    with pytest.raises(ValueError, match="max_iterations"):
        kt.transferability.logme(features, labels, max_iterations=0)
