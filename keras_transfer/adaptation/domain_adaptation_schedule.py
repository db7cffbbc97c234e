"""`DomainAdaptationSchedule`: ramps the adaptation weight during `fit`."""

from __future__ import annotations

import math

import keras

from keras_transfer._checks import check_number, is_finite_number

_RAMPS = ("ganin", "constant", "linear")
_UNITS = ("step", "epoch")


@keras.saving.register_keras_serializable(package="keras_transfer")
class DomainAdaptationSchedule(keras.callbacks.Callback):
    """Ramps a `DomainAdaptationModel`'s adaptation weight as training goes.

    Early in training the features are still meaningless, and a domain
    classifier (or discrepancy) pulling on them only adds noise. Ganin &
    Lempitsky (2015) therefore raise the reversal strength from 0 to its full
    value with `2 / (1 + exp(-gamma * p)) - 1`, where `p` goes linearly from
    0 to 1 over training and `gamma = 10`. This callback sets the model's
    `adaptation_scale` to `ramp(p)` before every step (or epoch), so the
    weight in force is `adaptation_weight * ramp(p)`; the value is read in the
    compiled train step, so nothing is retraced.

    `p` comes from the epoch index and the step within it (`epochs` and
    steps per epoch as `fit` reports them), never from a count, so
    `fit(initial_epoch=...)` resumes on the ramp. The weight in force is
    added to the epoch logs as `adaptation_weight`.

    Args:
        ramp: `"ganin"` (default), `"linear"` (`p`), `"constant"` (1: the
            full weight throughout), or a function mapping `p` in [0, 1) to a
            scale >= 0 (a plain Python function; register it with
            `keras.saving.register_keras_serializable` to save the callback's
            config).
        gamma: the steepness of the `"ganin"` ramp. Defaults to 10.
        unit: `"step"` (default) updates before every batch; `"epoch"`
            before every epoch.

    Example:

    >>> import keras_transfer as kt
    >>> schedule = kt.DomainAdaptationSchedule()
    >>> [round(schedule.scale_at(p), 3) for p in (0.0, 0.1, 0.5, 1.0)]
    [0.0, 0.462, 0.987, 1.0]
    """

    def __init__(self, ramp="ganin", gamma: float = 10.0, unit: str = "step"):
        super().__init__()
        if not callable(ramp) and ramp not in _RAMPS:
            raise ValueError(
                f"`ramp` must be one of {_RAMPS} or a function of the training "
                f"progress p in [0, 1); got {ramp!r}."
            )
        gamma = check_number(gamma, "gamma", "Ganin et al. use 10", low=0, low_open=True)
        if unit not in _UNITS:
            raise ValueError(f"`unit` must be one of {_UNITS}, got {unit!r}.")
        self.ramp = ramp
        self.gamma = float(gamma)
        self.unit = unit
        self._epoch = 0
        self._scale = None

    def scale_at(self, progress: float) -> float:
        """The ramp's value at training progress `progress` (0 to 1)."""
        if self.ramp == "ganin":
            scale = 2.0 / (1.0 + math.exp(-self.gamma * progress)) - 1.0
        elif self.ramp == "linear":
            scale = progress
        elif self.ramp == "constant":
            scale = 1.0
        else:
            scale = self.ramp(progress)
        if not (is_finite_number(scale) and scale >= 0):
            raise ValueError(
                f"The adaptation ramp gave {scale!r} at progress {progress:.4f}; it "
                "must give a finite number >= 0 (a scale of the adaptation weight)."
            )
        return float(scale)

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "adaptation_scale"):
            raise ValueError(
                "DomainAdaptationSchedule drives a kt.DomainAdaptationModel; "
                f"'{self.model.name}' is a {type(self.model).__name__}. For your own "
                "model with a kt.GradientReversal layer, set the layer's strength "
                "from a callback of your own."
            )
        self._scale = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self.unit == "epoch":
            self._set(epoch / self._epochs())

    def on_train_batch_begin(self, batch, logs=None):
        if self.unit == "step":
            steps = self.params.get("steps")
            if not steps:
                raise ValueError(
                    "DomainAdaptationSchedule(unit='step') needs the number of steps "
                    "per epoch, and this dataset does not say. Pass "
                    "`steps_per_epoch=` to `fit`, or use unit='epoch'."
                )
            self._set((self._epoch * steps + batch) / (self._epochs() * steps))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._scale is not None:
            logs["adaptation_weight"] = self.model.adaptation_weight * self._scale

    def _epochs(self) -> int:
        return max(1, int(self.params.get("epochs") or 1))

    def _set(self, progress: float):
        scale = self.scale_at(progress)
        if scale == self._scale:
            return
        # On JAX, `Callback.model` first writes the values a fit holds
        # outside the model back into its variables, so the train step picks
        # the new value up.
        self.model.adaptation_scale.assign(scale)
        self._scale = scale

    def get_config(self):
        ramp = self.ramp
        if callable(ramp):
            ramp = keras.saving.serialize_keras_object(ramp)
        return {"ramp": ramp, "gamma": self.gamma, "unit": self.unit}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("ramp"), dict):
            config["ramp"] = keras.saving.deserialize_keras_object(config["ramp"])
        return cls(**config)
