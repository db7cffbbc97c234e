"""Argument checks shared by the whole library.

One helper per kind of value, so every public piece refuses bad numbers the
same way: a `bool` is never a number, NaN never passes, infinity only where a
caller allows it, and the message names the argument, what it means and what
was given.
"""

from __future__ import annotations

import math
import numbers


def is_finite_number(value) -> bool:
    """True for a real, finite number that is not a `bool`."""
    return (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(float(value))
    )


def check_number(
    value,
    name: str,
    hint: str | None = None,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
    error: type[Exception] = ValueError,
    type_error: type[Exception] | None = None,
) -> float:
    """Returns `value` as a float, or raises if it is not a number in range.

    Args:
        value: the value given.
        name: the argument's name, as the user wrote it.
        hint: what the argument means, shown in parentheses in the message.
        low, high: optional bounds.
        low_open, high_open: whether each bound itself is excluded.
        allow_inf: accept an infinite value (NaN is never accepted).
        error: the exception type raised.
        type_error: the exception type raised for a value that is no real
            number at all (a string, a bool); defaults to `error`.

    Example:

    >>> from keras_transfer._checks import check_number
    >>> check_number(0.5, "alpha", low=0, high=1)
    0.5
    >>> check_number(0, "alpha", low=0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: `alpha` must be a finite number > 0, got 0.
    """
    is_number = not isinstance(value, bool) and isinstance(value, numbers.Real)
    ok = is_number and not math.isnan(float(value))
    ok = ok and (allow_inf or math.isfinite(float(value)))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raised = error if is_number or type_error is None else type_error
        raise raised(
            f"`{name}` must be {_describe(low, high, low_open, high_open, allow_inf)}"
            f"{f' ({hint})' if hint else ''}, got {value!r}."
        )
    return float(value)


def check_integer(
    value,
    name: str,
    hint: str | None = None,
    *,
    low: int | None = None,
    error: type[Exception] = ValueError,
) -> int:
    """Returns `value` as an int, or raises if it is not an integer >= `low`.

    Example:

    >>> from keras_transfer._checks import check_integer
    >>> check_integer(3, "every_epochs", low=1)
    3
    """
    is_integer = not isinstance(value, bool) and isinstance(value, numbers.Integral)
    if not is_integer or (low is not None and value < low):
        bound = f" >= {low}" if low is not None else ""
        raise error(
            f"`{name}` must be an integer{bound}{f' ({hint})' if hint else ''}, got {value!r}."
        )
    return int(value)


def _describe(low, high, low_open, high_open, allow_inf) -> str:
    kind = "a number" if allow_inf else "a finite number"
    if low is not None and high is not None:
        left, right = ("(" if low_open else "["), (")" if high_open else "]")
        return f"{kind} in {left}{low}, {high}{right}"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {high}"
    return kind
