import math
from collections import Counter

import numpy as np
import pytest

import keras_transfer as kt


def slow_nce(source_labels, labels):
    """-H(Y|Z) from counts, as in Tran et al. (2019)."""
    examples = len(labels)
    joint = Counter(zip(source_labels.tolist(), labels.tolist()))
    source = Counter(source_labels.tolist())
    return sum(count / examples * math.log(count / source[z]) for (z, _), count in joint.items())


def test_matches_the_formula_computed_with_counters():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=200)
    source = np.where(rng.random(200) < 0.6, labels * 3 + 1, rng.integers(0, 20, size=200))
    assert kt.transferability.nce(source, labels) == pytest.approx(
        slow_nce(source, labels), rel=1e-12
    )


def test_zero_when_the_source_label_determines_the_target_and_minus_entropy_when_unrelated():
    labels = np.array([0, 1, 0, 1, 2, 2, 0, 1])
    assert kt.transferability.nce(labels + 10, labels) == 0.0
    assert kt.transferability.nce(np.zeros(8, dtype=int), labels) == pytest.approx(
        -(2 * 3 / 8 * math.log(8 / 3) + 2 / 8 * math.log(4))
    )


def test_a_noisier_source_scores_lower():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=300)
    scores = []
    for noise in (0.0, 0.3, 0.7):
        source = np.where(rng.random(300) < noise, rng.integers(0, 3, size=300), labels)
        scores.append(kt.transferability.nce(source, labels))
    assert scores[0] > scores[1] > scores[2]
