import math

import pytest

from keras_transfer.multitask._sampling import batches_per_task, task_probabilities


def test_temperature_probabilities_are_sizes_to_the_power_one_over_t():
    sizes = {"a": 400, "b": 100, "c": 25}
    probabilities = task_probabilities(sizes, "temperature", temperature=2.0)
    assert probabilities == pytest.approx({"a": 20 / 35, "b": 10 / 35, "c": 5 / 35})
    assert task_probabilities(sizes, "temperature", 1.0) == pytest.approx(
        task_probabilities(sizes, "proportional")
    )
    nearly_uniform = task_probabilities(sizes, "temperature", 1e6)
    assert nearly_uniform == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, rel=1e-4)


def test_proportional_batches_are_one_pass():
    assert batches_per_task({"a": 95, "b": 10}, 10, "proportional") == {"a": 10, "b": 1}


def test_other_rules_share_one_pass_worth_of_batches_by_largest_remainder():
    sizes = {"a": 400, "b": 100, "c": 25}
    total = sum(math.ceil(n / 10) for n in sizes.values())  # 53
    counts = batches_per_task(sizes, 10, "temperature", 2.0)
    assert sum(counts.values()) == total
    # Shares 30.29, 15.14, 7.57: the largest remainder (c) gets the spare batch.
    assert counts == {"a": 30, "b": 15, "c": 8}


def test_every_task_gets_at_least_one_batch():
    counts = batches_per_task({"a": 10_000, "b": 1}, 100, "proportional")
    assert counts == {"a": 100, "b": 1}
    counts = batches_per_task({"a": 10_000, "b": 1}, 100, "temperature", 1.0)
    assert counts == {"a": 100, "b": 1}
    assert batches_per_task({"a": 1, "b": 1, "c": 1}, 100, "uniform") == {"a": 1, "b": 1, "c": 1}
