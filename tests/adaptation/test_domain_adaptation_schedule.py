import math

import keras
import numpy as np
import pytest
from adaptation.adaptation_utils import adaptation_model, domain_data, pair_inputs, snapshot
from keras import ops

from keras_transfer.adaptation import DomainAdaptationSchedule


class ScaleRecorder(keras.callbacks.Callback):
    """Reads `adaptation_scale` before each step, after the schedule set it."""

    def __init__(self):
        super().__init__()
        self.scales = []

    def on_train_batch_begin(self, batch, logs=None):
        self.scales.append(float(ops.convert_to_numpy(self.model.adaptation_scale)))


def ganin(progress, gamma=10.0):
    return 2 / (1 + math.exp(-gamma * progress)) - 1


def fit_pairs(model, callbacks, epochs=2, n=12, batch_size=4, initial_epoch=0):
    x_source, y_source, x_target = domain_data(n_source=n, n_target=n)
    return model.fit(
        pair_inputs(x_source, x_target),
        y_source,
        batch_size=batch_size,
        epochs=epochs,
        initial_epoch=initial_epoch,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )


def test_ganin_ramp_per_step_and_logs():
    model = adaptation_model(adaptation_weight=0.5)
    recorder = ScaleRecorder()
    history = fit_pairs(model, [DomainAdaptationSchedule(gamma=5.0), recorder])
    # 2 epochs x 3 steps: p = step / 6.
    expected = [ganin(step / 6, gamma=5.0) for step in range(6)]
    np.testing.assert_allclose(recorder.scales, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        history.history["adaptation_weight"], [0.5 * expected[2], 0.5 * expected[5]], rtol=1e-6
    )


def test_epoch_unit_linear_and_constant_ramps_and_resuming():
    recorder = ScaleRecorder()
    model = adaptation_model()
    fit_pairs(model, [DomainAdaptationSchedule("linear", unit="epoch"), recorder], epochs=2)
    np.testing.assert_allclose(recorder.scales, [0, 0, 0, 0.5, 0.5, 0.5], atol=1e-7)
    recorder.scales.clear()
    model.adaptation_scale.assign(0.0)
    fit_pairs(model, [DomainAdaptationSchedule("constant"), recorder], epochs=1)
    assert recorder.scales == [1.0, 1.0, 1.0]
    recorder.scales.clear()
    fit_pairs(model, [DomainAdaptationSchedule("linear"), recorder], epochs=2, initial_epoch=1)
    np.testing.assert_allclose(recorder.scales, [3 / 6, 4 / 6, 5 / 6], rtol=1e-6)


def test_scale_set_inside_one_fit_is_the_scale_trained_with():
    """A fit with a per-step schedule trains like one-step fits with the
    scale assigned by hand in between (on JAX this needs the state sync)."""
    scales = [1.0, 0.0, 2.0]

    def ramp(progress):
        return scales[round(progress * 3)]

    x_source, y_source, x_target = domain_data(n_source=12, n_target=12)
    scheduled = adaptation_model()
    fit_pairs(scheduled, [DomainAdaptationSchedule(ramp)], epochs=1, n=12, batch_size=4)
    keras.backend.clear_session()
    by_hand = adaptation_model()
    for step, scale in enumerate(scales):
        rows = slice(4 * step, 4 * step + 4)
        by_hand.adaptation_scale.assign(scale)
        by_hand.fit(
            pair_inputs(x_source[rows], x_target[rows]),
            y_source[rows],
            batch_size=4,
            verbose=0,
        )
    for a, b in zip(snapshot(scheduled.feature_extractor), snapshot(by_hand.feature_extractor)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="ramp"):
        DomainAdaptationSchedule("cosine")
    for gamma in (0, float("inf"), float("nan"), True):
        with pytest.raises(ValueError, match="`gamma` must be a finite number > 0"):
            DomainAdaptationSchedule(gamma=gamma)
    with pytest.raises(ValueError, match="unit"):
        DomainAdaptationSchedule(unit="batch")
    for scale in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="must give a finite number >= 0"):
            DomainAdaptationSchedule(lambda p, scale=scale: scale).scale_at(0.5)


def test_refuses_a_model_without_adaptation():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="DomainAdaptationModel"):
        model.fit(
            np.zeros((4, 3)), np.zeros((4, 1)), verbose=0, callbacks=[DomainAdaptationSchedule()]
        )


@keras.saving.register_keras_serializable(package="keras_transfer_tests")
def half_ramp(progress):
    return 0.5 * progress


def test_config_round_trip():
    for schedule in (
        DomainAdaptationSchedule(gamma=3.0, unit="epoch"),
        DomainAdaptationSchedule(half_ramp),
    ):
        rebuilt = DomainAdaptationSchedule.from_config(schedule.get_config())
        assert rebuilt.get_config() == schedule.get_config()
        assert rebuilt.scale_at(0.4) == pytest.approx(schedule.scale_at(0.4))
