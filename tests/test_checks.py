import math

import numpy as np
import pytest

from keras_transfer._checks import check_integer, check_number, is_finite_number


@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.25), np.int64(3)])
def test_real_numbers_pass_as_floats(value):
    assert check_number(value, "x") == float(value)
    assert is_finite_number(value)


@pytest.mark.parametrize("value", [True, "1", None, math.nan, math.inf, -math.inf, [1]])
def test_bools_strings_nan_and_infinity_are_refused(value):
    with pytest.raises(ValueError, match="`x` must be a finite number"):
        check_number(value, "x")
    assert not is_finite_number(value)


def test_infinity_passes_only_where_allowed_and_nan_never():
    assert check_number(math.inf, "x", allow_inf=True) == math.inf
    with pytest.raises(ValueError, match="must be a number, got nan"):
        check_number(math.nan, "x", allow_inf=True)


@pytest.mark.parametrize(
    "value, bounds, ok",
    [
        (0, {"low": 0}, True),
        (0, {"low": 0, "low_open": True}, False),
        (1, {"high": 1}, True),
        (1, {"high": 1, "high_open": True}, False),
        (0.5, {"low": 0, "high": 1, "low_open": True, "high_open": True}, True),
        (-0.1, {"low": 0, "high": 1}, False),
    ],
)
def test_bounds_open_and_closed(value, bounds, ok):
    if ok:
        assert check_number(value, "x", **bounds) == value
    else:
        with pytest.raises(ValueError, match="`x` must be a finite number"):
            check_number(value, "x", **bounds)


def test_the_message_names_the_argument_the_range_the_hint_and_the_value():
    with pytest.raises(ValueError) as error:
        check_number(2.0, "alpha", "the weight of the distillation term", low=0, high=1)
    assert str(error.value) == (
        "`alpha` must be a finite number in [0, 1] (the weight of the distillation term), got 2.0."
    )


def test_a_value_that_is_no_number_can_raise_a_type_error():
    with pytest.raises(TypeError, match="`x`"):
        check_number("0.5", "x", type_error=TypeError)
    with pytest.raises(ValueError, match="`x`"):
        check_number(2.0, "x", high=1, type_error=TypeError)


def test_integers():
    assert check_integer(np.int32(3), "n", low=1) == 3
    for bad in (0, 1.0, True, "2"):
        with pytest.raises(ValueError, match="`n` must be an integer >= 1"):
            check_integer(bad, "n", low=1)
    with pytest.raises(TypeError):
        check_integer(1.5, "n", error=TypeError)
