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

from keras_transfer.schedules import OneCycle


def reference(step, max_lr, total_steps, pct_start=0.25, div=25.0, final_div=1e4, cos=True):
    """fastai's `combined_cos`, in float64, written from its definition."""
    start, final = max_lr / div, max_lr / div / final_div
    position = min(step / total_steps, 1.0)

    def anneal(a, b, done):
        if cos:
            return a + (1 - math.cos(math.pi * done)) * (b - a) / 2
        return a + done * (b - a)

    if position < pct_start:
        return anneal(start, max_lr, position / pct_start)
    return anneal(max_lr, final, (position - pct_start) / (1 - pct_start))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_lr": 0.1, "total_steps": 100},
        {"max_lr": 3e-4, "total_steps": 37, "pct_start": 0.3, "div_factor": 10.0},
        {"max_lr": 1.0, "total_steps": 10, "final_div_factor": 100.0, "anneal_strategy": "linear"},
    ],
    ids=["defaults", "pytorch_like", "linear"],
)
def test_values_match_a_numpy_reference(kwargs):
    schedule = OneCycle(**kwargs)
    total = kwargs["total_steps"]
    got = np.array([float(schedule(step)) for step in range(total + 3)])
    expected = [
        reference(
            step,
            kwargs["max_lr"],
            total,
            kwargs.get("pct_start", 0.25),
            kwargs.get("div_factor", 25.0),
            kwargs.get("final_div_factor", 1e4),
            kwargs.get("anneal_strategy", "cos") == "cos",
        )
        for step in range(total + 3)
    ]
    np.testing.assert_allclose(got, expected, rtol=2e-5)
    assert got.max() <= kwargs["max_lr"] * (1 + 1e-6)
    # Past the end it holds the final rate.
    assert got[-1] == got[-2] == got[total]


def test_step_can_be_an_iteration_variable_or_a_tensor():
    schedule = OneCycle(0.1, 100)
    steps = [
        keras.Variable(40, dtype="int", trainable=False),  # as the optimizer's iterations
        keras.ops.convert_to_tensor(40, dtype="int32"),
        keras.ops.convert_to_tensor(40.0, dtype="float32"),
    ]
    for step in steps:
        value = keras.ops.convert_to_numpy(schedule(step))
        assert value.dtype == np.float32
        assert float(value) == pytest.approx(reference(40, 0.1, 100), rel=1e-5)


def test_rates_reach_the_optimizer_inside_fit():
    assert_follows_reference_inside_fit(
        OneCycle(0.5, 12, pct_start=0.3, div_factor=5.0, final_div_factor=10.0),
        [reference(step, 0.5, 12, 0.3, 5.0, 10.0) for step in range(12)],
    )


def test_serialization_round_trips():
    assert_round_trips(OneCycle(0.1, 50, pct_start=0.4, anneal_strategy="linear", name="warm"))


def test_saved_with_its_optimizer_in_a_keras_file(tmp_path):
    assert_saved_in_a_keras_model(OneCycle(0.05, 20), tmp_path)


def test_composes_with_discriminative_rates():
    assert_groups_move_by_multiplier_times_schedule(
        OneCycle(0.1, 6, pct_start=0.5, div_factor=4.0, final_div_factor=2.0)
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_lr": 0.0, "total_steps": 10}, "max_lr"),
        ({"max_lr": "1e-3", "total_steps": 10}, "max_lr"),
        ({"max_lr": float("inf"), "total_steps": 10}, "`max_lr` must be a finite number > 0"),
        ({"max_lr": float("nan"), "total_steps": 10}, "max_lr"),
        ({"max_lr": True, "total_steps": 10}, "max_lr"),
        ({"max_lr": 1e-3, "total_steps": 0}, "total_steps"),
        ({"max_lr": 1e-3, "total_steps": 10.5}, "total_steps"),
        ({"max_lr": 1e-3, "total_steps": True}, "total_steps"),
        ({"max_lr": 1e-3, "total_steps": 10, "pct_start": 0.0}, "pct_start"),
        ({"max_lr": 1e-3, "total_steps": 10, "pct_start": 1.0}, "pct_start"),
        ({"max_lr": 1e-3, "total_steps": 10, "div_factor": -1.0}, "div_factor"),
        ({"max_lr": 1e-3, "total_steps": 10, "final_div_factor": 0}, "final_div_factor"),
        ({"max_lr": 1e-3, "total_steps": 10, "div_factor": float("inf")}, "div_factor"),
        ({"max_lr": 1e-3, "total_steps": 10, "anneal_strategy": "cosine"}, "anneal_strategy"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OneCycle(**kwargs)
