"""fastai's three ways to read a learning rate off a range-test curve."""

from __future__ import annotations

import numpy as np

METHODS = ("valley", "steep", "minimum")


def suggest(learning_rates: np.ndarray, losses: np.ndarray, method: str) -> float | None:
    """The suggested rate, or None when the curve is too short to read.

    As fastai's `lr_find`: the first tenth and the last five points are left
    out (the flat start and the blow-up), and so is everything from the first
    non-finite loss on; at least two points must remain.
    """
    if method not in METHODS:
        raise ValueError(f"`suggest` must be one of {METHODS}, got {method!r}.")
    learning_rates, losses = _readable_part(learning_rates, losses)
    if len(losses) < 2:
        return None
    return float(_SUGGESTERS[method](learning_rates, losses))


def _readable_part(learning_rates, losses):
    learning_rates, losses = np.asarray(learning_rates), np.asarray(losses)
    not_finite = np.flatnonzero(~np.isfinite(losses))
    if len(not_finite):
        learning_rates, losses = learning_rates[: not_finite[0]], losses[: not_finite[0]]
    readable = slice(len(losses) // 10, max(len(losses) - 5, 0))
    return learning_rates[readable], losses[readable]


def _valley(learning_rates, losses):
    """Halfway down the longest run of decreasing losses (fastai's default)."""
    count = len(losses)
    run_length = np.ones(count, dtype=int)
    run_start = np.arange(count)
    for i in range(1, count):
        for j in range(i):
            if losses[i] < losses[j] and run_length[j] + 1 > run_length[i]:
                run_length[i], run_start[i] = run_length[j] + 1, run_start[j]
    end = int(np.argmax(run_length))
    start = int(run_start[end])
    third = (end - start) / 3
    return learning_rates[start + int(third) + int(third / 2)]


def _steep(learning_rates, losses):
    """Where the loss falls fastest per decade of learning rate."""
    slopes = np.diff(losses) / np.diff(np.log(learning_rates))
    return learning_rates[int(np.argmin(slopes))]


def _minimum(learning_rates, losses):
    """A tenth of the rate at the lowest loss."""
    return learning_rates[int(np.argmin(losses))] / 10


_SUGGESTERS = {"valley": _valley, "steep": _steep, "minimum": _minimum}
