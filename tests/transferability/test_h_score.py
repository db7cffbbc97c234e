import numpy as np
import pytest

import keras_transfer as kt


def slow_h_score(features, labels):
    """tr(cov(f)^-1 cov(E[f|y])) with a loop per example and np.cov, as in Bao et al. (2019)."""
    conditional_means = np.zeros_like(features, dtype=np.float64)
    for i, label in enumerate(labels):
        conditional_means[i] = features[labels == label].mean(axis=0)
    feature_covariance = np.cov(features.astype(np.float64), rowvar=False)
    return np.trace(np.linalg.inv(feature_covariance) @ np.cov(conditional_means, rowvar=False))


def classes_data(examples=150, dimensions=6, classes=4, signal=1.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=examples)
    features = rng.normal(size=(examples, dimensions))
    features[:, :classes] += signal * np.eye(classes)[labels]
    return features, labels


def test_matches_the_formula_computed_with_loops():
    features, labels = classes_data()
    assert kt.transferability.h_score(features, labels) == pytest.approx(
        slow_h_score(features, labels), rel=1e-9
    )


def test_redundant_dimensions_change_nothing():
    features, labels = classes_data()
    redundant = np.concatenate([features, features[:, :2] * 3.0, np.ones((150, 1))], axis=1)
    assert kt.transferability.h_score(redundant, labels) == pytest.approx(
        slow_h_score(features, labels), rel=1e-6
    )


def test_lies_between_zero_and_classes_minus_one_and_grows_with_the_signal():
    scores = [
        kt.transferability.h_score(*classes_data(signal=signal)) for signal in (0.0, 1.0, 3.0)
    ]
    assert scores == sorted(scores)
    assert 0 <= scores[0] < 0.2
    assert scores[-1] <= 3.0 + 1e-9


def test_separable_features_reach_the_maximum():
    labels = np.repeat(np.arange(3), 10)
    features = np.eye(3)[labels] * 5.0
    assert kt.transferability.h_score(features, labels) == pytest.approx(2.0)


def test_float32_rounding_in_a_redundant_direction_counts_for_nothing():
    # Probability rows sum to 1: one direction has no variance but float32 rounding.
    features, labels = classes_data()
    probabilities = np.exp(features) / np.exp(features).sum(axis=1, keepdims=True)
    exact = kt.transferability.h_score(probabilities[:, :-1], labels)  # Drops the redundancy.
    assert kt.transferability.h_score(probabilities.astype("float32"), labels) == pytest.approx(
        exact, rel=1e-4
    )
    assert kt.transferability.h_score(probabilities, labels) == pytest.approx(exact, rel=1e-6)


def test_no_more_examples_than_dimensions_warns_that_the_score_ranks_nothing():
    features, labels = classes_data(examples=20, dimensions=30, signal=0.0)
    with pytest.warns(UserWarning, match=r"rank \(19\) reaches the number of examples"):
        score = kt.transferability.h_score(features, labels)
    assert score == pytest.approx(3.0)  # classes - 1, from pure noise.
