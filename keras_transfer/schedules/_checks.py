"""Argument checks shared by the learning-rate schedules."""

from __future__ import annotations

import numbers


def positive_number(value, name: str, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"`{name}` must be a number > 0 ({hint}), got {value!r}.")
    return float(value)


def open_fraction(value, name: str, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(
            f"`{name}` must be a fraction strictly between 0 and 1 ({hint}), got {value!r}."
        )
    return float(value)


def step_count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(
            "`total_steps` must be a positive integer: the number of optimizer steps the "
            "schedule spans, e.g. `epochs * steps_per_epoch`; got "
            f"{value!r}."
        )
    return int(value)
