"""`SlantedTriangular`: ULMFiT's slanted triangular learning rates."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_transfer._checks import check_integer, check_number


@keras.saving.register_keras_serializable(package="keras_transfer")
class SlantedTriangular(keras.optimizers.schedules.LearningRateSchedule):
    """ULMFiT's slanted triangular learning rates (STLR).

    A short linear warm-up to `max_lr` over the first `cut_frac` of the steps,
    then a long linear decay to `max_lr / ratio` (Howard & Ruder, 2018, eq. 3):

        cut = floor(total_steps * cut_frac)
        p = step / cut                                      if step < cut
        p = 1 - (step - cut) / (cut * (1 / cut_frac - 1))   otherwise
        lr = max_lr * (1 + p * (ratio - 1)) / ratio

    ULMFiT fine-tunes language models and classifiers with it, together with
    discriminative rates (`kt.DiscriminativeLR`) and gradual unfreezing
    (`kt.FreezeSchedule`): it converges quickly to a good region, then
    refines. The rate never goes below `max_lr / ratio`: where eq. 3 would
    (past `cut / cut_frac` steps, which comes before `total_steps` when
    `total_steps * cut_frac` is not a whole number), it stays there.

    The schedule is a plain `LearningRateSchedule` of the optimizer's step, so
    it runs inside the compiled train step on every backend, is saved with the
    optimizer in `.keras` files, and composes with `kt.DiscriminativeLR`.

    Args:
        max_lr: the peak learning rate (ULMFiT uses 0.01). Must be finite and > 0.
        total_steps: the number of optimizer steps, e.g.
            `epochs * steps_per_epoch`. Must be a positive integer.
        cut_frac: the fraction of the steps spent increasing the rate.
            Defaults to 0.1. Must be in (0, 1), with
            `total_steps * cut_frac >= 1`.
        ratio: how much smaller the lowest rate is than `max_lr`. Defaults to
            32. Must be finite and >= 1.
        name: the name scope of the computation. Defaults to
            `"SlantedTriangular"`.

    Example:

    >>> import keras
    >>> import keras_transfer as kt
    >>> schedule = kt.schedules.SlantedTriangular(max_lr=0.032, total_steps=100)
    >>> optimizer = keras.optimizers.Adam(learning_rate=schedule)
    >>> [round(float(schedule(step)), 6) for step in (0, 10, 55, 100)]
    [0.001, 0.032, 0.0165, 0.001]
    """

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        cut_frac: float = 0.1,
        ratio: float = 32.0,
        name: str = "SlantedTriangular",
    ):
        super().__init__()
        self.max_lr = check_number(
            max_lr, "max_lr", "the peak learning rate; ULMFiT uses 0.01", low=0, low_open=True
        )
        self.total_steps = check_integer(
            total_steps,
            "total_steps",
            "the number of optimizer steps the schedule spans, e.g. `epochs * steps_per_epoch`",
            low=1,
        )
        self.cut_frac = check_number(
            cut_frac,
            "cut_frac",
            "the share of the steps spent increasing the rate, e.g. 0.1",
            low=0,
            high=1,
            low_open=True,
            high_open=True,
        )
        self.ratio = check_number(
            ratio, "ratio", "the lowest rate is `max_lr / ratio`; ULMFiT uses 32", low=1
        )
        if math.floor(self.total_steps * self.cut_frac) < 1:
            raise ValueError(
                f"`total_steps * cut_frac` must be at least 1 so that the rate has a "
                f"step to rise in; got total_steps={self.total_steps} and "
                f"cut_frac={self.cut_frac}. Raise `cut_frac` or `total_steps`."
            )
        self.name = name

    @property
    def cut(self) -> int:
        """The step at which the rate peaks."""
        return math.floor(self.total_steps * self.cut_frac)

    def __call__(self, step):
        with keras.name_scope(self.name):
            step = ops.cast(step, "float32")
            cut = float(self.cut)
            rising = step / cut
            falling = 1.0 - (step - cut) / (cut * (1.0 / self.cut_frac - 1.0))
            p = ops.maximum(ops.where(step < cut, rising, falling), 0.0)
            return self.max_lr * (1.0 + p * (self.ratio - 1.0)) / self.ratio

    def get_config(self):
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "cut_frac": self.cut_frac,
            "ratio": self.ratio,
            "name": self.name,
        }
