"""How many batches each task gets in one epoch of `kt.task_batches`.

Pure arithmetic on the tasks' sizes, kept apart from the `tf.data` pipeline so
that the rule can be read (and tested) on its own.
"""

from __future__ import annotations

import math

from keras_transfer._checks import check_number

SAMPLINGS = ("proportional", "uniform", "temperature")


def check_sampling(sampling: str, temperature) -> float:
    """Validates `sampling` and `temperature`; returns the temperature as a float."""
    if sampling not in SAMPLINGS:
        raise ValueError(
            f"`sampling` must be one of {SAMPLINGS}, got {sampling!r}: 'proportional' "
            "draws batches in proportion to the tasks' sizes, 'uniform' equally from "
            "every task, 'temperature' in proportion to size ** (1 / temperature)."
        )
    return check_number(
        temperature,
        "temperature",
        "task probabilities go as size ** (1 / temperature): 1 is proportional, "
        "large values approach uniform; use e.g. temperature=2.0",
        low=0,
        low_open=True,
        type_error=TypeError,
    )


def task_probabilities(sizes: dict, sampling: str, temperature: float = 2.0) -> dict:
    """The probability that a batch comes from each task.

    `proportional`: `n_k / sum(n)`; `uniform`: `1 / K`; `temperature`:
    `n_k ** (1 / T) / sum(n ** (1 / T))`.

    >>> task_probabilities({"a": 100, "b": 25}, "temperature", temperature=2.0)
    {'a': 0.6666666666666666, 'b': 0.3333333333333333}
    """
    if sampling == "uniform":
        return {task: 1.0 / len(sizes) for task in sizes}
    power = 1.0 if sampling == "proportional" else 1.0 / temperature
    weights = {task: float(size) ** power for task, size in sizes.items()}
    total = sum(weights.values())
    return {task: weight / total for task, weight in weights.items()}


def batches_per_task(sizes: dict, batch_size: int, sampling: str, temperature: float = 2.0) -> dict:
    """The number of batches each task gives one epoch.

    An epoch has as many batches as one pass over every task would:
    `sum(ceil(n_k / batch_size))`. With `proportional` sampling it is exactly
    that pass: `ceil(n_k / batch_size)` batches of task `k`. Otherwise the
    epoch's batches are shared out in proportion to the task probabilities
    (largest remainders), and every task gets at least one batch, so each
    epoch logs every task.

    >>> batches_per_task({"a": 100, "b": 20}, 10, "uniform")
    {'a': 6, 'b': 6}
    """
    own = {task: math.ceil(size / batch_size) for task, size in sizes.items()}
    if sampling == "proportional":
        return own
    total = max(sum(own.values()), len(sizes))
    shares = {
        task: total * p for task, p in task_probabilities(sizes, sampling, temperature).items()
    }
    counts = {task: math.floor(share) for task, share in shares.items()}
    by_remainder = sorted(shares, key=lambda task: counts[task] - shares[task])
    for task in by_remainder[: total - sum(counts.values())]:
        counts[task] += 1
    for task in counts:
        if counts[task] == 0:
            donor = max(counts, key=counts.get)
            counts[donor] -= 1
            counts[task] = 1
    return counts
