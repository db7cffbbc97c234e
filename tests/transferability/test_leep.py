import numpy as np
import pytest

import keras_transfer as kt


def slow_leep(probabilities, labels):
    """LEEP as written in Nguyen et al. (2020), with loops over examples and classes."""
    examples, source_classes = probabilities.shape
    target_classes = sorted(set(labels.tolist()))
    joint = {(y, z): 0.0 for y in target_classes for z in range(source_classes)}
    for row, y in zip(probabilities, labels):
        for z in range(source_classes):
            joint[y, z] += row[z] / examples
    total = 0.0
    for row, y in zip(probabilities, labels):
        expected = 0.0
        for z in range(source_classes):
            marginal = sum(joint[other, z] for other in target_classes)
            if marginal > 0:
                expected += joint[y, z] / marginal * row[z]
        total += np.log(expected)
    return total / examples


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def source_predictions(examples=120, source_classes=7, classes=3, sharpness=2.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=examples)
    logits = rng.normal(size=(examples, source_classes))
    logits[np.arange(examples), labels * 2] += sharpness  # Target class y ~ source class 2y.
    return softmax(logits), labels


def test_matches_the_formula_computed_with_loops():
    probabilities, labels = source_predictions()
    assert kt.transferability.leep(probabilities, labels) == pytest.approx(
        slow_leep(probabilities, labels), rel=1e-12
    )


def test_a_source_class_no_example_predicts_is_left_out():
    probabilities, labels = source_predictions()
    probabilities = np.concatenate([probabilities, np.zeros((len(labels), 2))], axis=1)
    score = kt.transferability.leep(probabilities, labels)
    assert np.isfinite(score)
    assert score == pytest.approx(slow_leep(probabilities, labels), rel=1e-12)


def test_sharper_source_predictions_of_the_target_classes_score_higher():
    scores = [
        kt.transferability.leep(*source_predictions(sharpness=sharpness))
        for sharpness in (0.0, 1.0, 3.0, 6.0)
    ]
    assert scores == sorted(scores)
    assert all(score <= 0 for score in scores)


def test_a_perfect_source_scores_zero_and_an_uninformative_one_the_label_entropy():
    labels = np.array([0, 0, 1, 1, 1, 2])
    assert kt.transferability.leep(np.eye(3)[labels], labels) == pytest.approx(0.0)
    counts = np.bincount(labels) / len(labels)
    entropy = -np.sum(counts * np.log(counts))
    uniform = np.full((6, 4), 0.25)
    assert kt.transferability.leep(uniform, labels) == pytest.approx(-entropy)


def test_logits_are_refused_with_the_fix():
    probabilities, labels = source_predictions()
    with pytest.raises(ValueError, match="softmax"):
        kt.transferability.leep(np.log(probabilities), labels)
