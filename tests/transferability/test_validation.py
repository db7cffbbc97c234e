"""Bad input, refused the same way by every score (one test per mistake, all scores in it)."""

import numpy as np
import pytest

import keras_transfer as kt

SCORES = ["logme", "h_score", "leep", "nce"]


def first_argument(score, examples=30, seed=0):
    """Features (probability rows, so that LEEP takes them too) or source labels for NCE."""
    rng = np.random.default_rng(seed)
    if score == "nce":
        return rng.integers(0, 5, size=examples)
    values = rng.random((examples, 5))
    return values / values.sum(axis=1, keepdims=True)


def labels(examples=30, classes=3):
    return np.arange(examples) % classes


def call(score, first, labels):
    return getattr(kt.transferability, score)(first, labels)


def test_good_input_gives_a_finite_python_float():
    for score in SCORES:
        result = call(score, first_argument(score), labels())
        assert type(result) is float and np.isfinite(result), score


def test_one_class_only():
    for score in SCORES:
        with pytest.raises(ValueError, match="one class only.*at least two"):
            call(score, first_argument(score), np.zeros(30, dtype=int))


def test_fewer_examples_than_classes():
    for score in SCORES:
        with pytest.raises(ValueError, match="more examples than classes"):
            call(score, first_argument(score, examples=3), np.array([0, 1, 2]))


@pytest.mark.parametrize(
    "bad_labels",
    [np.arange(30) % 3 + 0.5, np.array(["cat", "dog", "eel"] * 10), np.arange(30) % 2 == 0],
    ids=["float", "str", "bool"],
)
def test_labels_that_are_not_integers(bad_labels):
    for score in SCORES:
        with pytest.raises(TypeError, match="integer class ids.*np.unique"):
            call(score, first_argument(score), bad_labels)


def test_one_hot_labels_are_refused_with_the_fix():
    for score in SCORES:
        with pytest.raises(ValueError, match=r"argmax\(axis=1\)"):
            call(score, first_argument(score), np.eye(3)[labels()])


def test_mismatched_lengths():
    for score in SCORES:
        with pytest.raises(ValueError, match="30 examples but `labels` has 29.*same data"):
            call(score, first_argument(score), labels()[:29])


def test_empty_input():
    for score in SCORES:
        with pytest.raises(ValueError, match="empty"):
            call(score, first_argument(score)[:0], labels()[:0])


def test_features_with_nan_name_the_rows():
    for score in ["logme", "h_score", "leep"]:
        first = first_argument(score)
        first[[4, 7]] = np.nan
        with pytest.raises(
            ValueError, match=r"NaN or infinite values in 2 example\(s\) \(rows 4, 7\)"
        ):
            call(score, first, labels())


def test_features_that_are_not_a_matrix():
    for score in ["logme", "h_score"]:
        with pytest.raises(ValueError, match="2-D.*Pool or flatten"):
            call(score, np.ones((30, 2, 2)), labels())
        with pytest.raises(TypeError, match="numbers"):
            call(score, np.array([["a", "b"]] * 30), labels())


def test_labels_given_as_a_column_are_accepted():
    first = first_argument("logme")
    assert kt.transferability.logme(first, labels()[:, None]) == kt.transferability.logme(
        first, labels()
    )
