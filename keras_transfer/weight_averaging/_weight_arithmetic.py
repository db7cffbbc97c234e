"""Interpolating and averaging lists of weight values, as numpy arrays.

Floating-point weights are combined in float64 and rounded once to their
own dtype. Other weights (integer counters, step variables, boolean flags)
have no meaningful average: they are copied from the first list given, the
model whose architecture the result takes.
"""

from __future__ import annotations

import numpy as np


def interpolate(start_values: list, end_values: list, alpha: float, floats: list[bool]) -> list:
    """`(1 - alpha) * start + alpha * end` per float weight; the others from `end_values`."""
    return [
        _round_like(end, (1.0 - alpha) * _wide(start) + alpha * _wide(end)) if is_float else end
        for start, end, is_float in zip(start_values, end_values, floats)
    ]


def average(value_lists: list[list], floats: list[bool]) -> list:
    """The mean of each float weight over `value_lists`; the others from the first list."""
    return [
        _round_like(values[0], np.mean(np.stack([_wide(v) for v in values]), axis=0))
        if is_float
        else values[0]
        for values, is_float in zip(zip(*value_lists), floats)
    ]


def _wide(value) -> np.ndarray:
    return np.asarray(value).astype(np.float64)


def _round_like(reference, value: np.ndarray) -> np.ndarray:
    return value.astype(np.asarray(reference).dtype)
