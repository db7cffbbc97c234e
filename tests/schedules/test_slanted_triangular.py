import math

import keras
import numpy as np
import pytest
from schedules.schedule_checks import (
    assert_follows_reference_inside_fit,
    assert_groups_move_by_multiplier_times_schedule,
    assert_round_trips,
    assert_saved_in_a_keras_model,
)

from keras_transfer.schedules import SlantedTriangular


def reference(step, max_lr, total_steps, cut_frac=0.1, ratio=32.0):
    """Howard & Ruder (2018), eq. 3, in float64, held at its floor once it reaches it."""
    cut = math.floor(total_steps * cut_frac)
    if step < cut:
        p = step / cut
    else:
        p = 1 - (step - cut) / (cut * (1 / cut_frac - 1))
    return max_lr * (1 + max(p, 0.0) * (ratio - 1)) / ratio


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_lr": 0.01, "total_steps": 100},
        {"max_lr": 0.004, "total_steps": 25, "cut_frac": 0.1, "ratio": 8.0},
        {"max_lr": 1.0, "total_steps": 9, "cut_frac": 0.5, "ratio": 2.0},
    ],
    ids=["ulmfit", "cut_rounded_down", "half_rising"],
)
def test_values_match_eq_3(kwargs):
    schedule = SlantedTriangular(**kwargs)
    total = kwargs["total_steps"]
    got = np.array([float(schedule(step)) for step in range(total + 3)])
    expected = [reference(step, **kwargs) for step in range(total + 3)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got.argmax() == schedule.cut == math.floor(total * kwargs.get("cut_frac", 0.1))
    assert got.min() == pytest.approx(kwargs["max_lr"] / kwargs.get("ratio", 32.0), rel=1e-6)


def test_ulmfit_shape_rises_for_a_tenth_then_falls_to_a_32nd():
    schedule = SlantedTriangular(0.01, 1000)
    rates = np.array([float(schedule(step)) for step in range(1001)])
    assert np.all(np.diff(rates[:101]) > 0)
    assert np.all(np.diff(rates[100:]) < 0)
    assert rates[100] == pytest.approx(0.01)
    assert rates[0] == rates[1000] == pytest.approx(0.01 / 32)


def test_step_can_be_an_iteration_variable():
    schedule = SlantedTriangular(0.01, 100)
    value = schedule(keras.Variable(55, dtype="int", trainable=False))
    assert float(value) == pytest.approx(reference(55, 0.01, 100), rel=1e-6)


def test_rates_reach_the_optimizer_inside_fit():
    assert_follows_reference_inside_fit(
        SlantedTriangular(0.5, 12, cut_frac=0.25, ratio=4.0),
        [reference(step, 0.5, 12, 0.25, 4.0) for step in range(12)],
    )


def test_serialization_round_trips():
    assert_round_trips(SlantedTriangular(0.02, 40, cut_frac=0.2, ratio=10.0, name="stlr"))


def test_saved_with_its_optimizer_in_a_keras_file(tmp_path):
    assert_saved_in_a_keras_model(SlantedTriangular(0.05, 20), tmp_path)


def test_composes_with_discriminative_rates():
    assert_groups_move_by_multiplier_times_schedule(
        SlantedTriangular(0.1, 6, cut_frac=0.5, ratio=4.0)
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_lr": -0.01, "total_steps": 10}, "max_lr"),
        ({"max_lr": float("inf"), "total_steps": 10}, "`max_lr` must be a finite number > 0"),
        ({"max_lr": 0.01, "total_steps": 10.0}, "`total_steps` must be an integer >= 1"),
        ({"max_lr": 0.01, "total_steps": -5}, "total_steps"),
        ({"max_lr": 0.01, "total_steps": 10, "cut_frac": 1.5}, "cut_frac"),
        ({"max_lr": 0.01, "total_steps": 10, "cut_frac": 0}, "cut_frac"),
        ({"max_lr": 0.01, "total_steps": 10, "ratio": 0.5}, "ratio"),
        ({"max_lr": 0.01, "total_steps": 10, "ratio": float("inf")}, "ratio"),
        ({"max_lr": 0.01, "total_steps": 5, "cut_frac": 0.1}, "total_steps \\* cut_frac"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SlantedTriangular(**kwargs)
