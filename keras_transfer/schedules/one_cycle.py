"""`OneCycle`: the 1cycle learning-rate policy (Smith, 2018; fastai's `fit_one_cycle`)."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_transfer._checks import check_integer, check_number

_STRATEGIES = ("cos", "linear")


@keras.saving.register_keras_serializable(package="keras_transfer")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """The 1cycle policy: warm up to `max_lr`, then anneal far below the start.

    Leslie Smith's one-cycle schedule as fastai's `fit_one_cycle` runs it: over
    the first `pct_start` of `total_steps` the rate rises from
    `max_lr / div_factor` to `max_lr`, then falls to
    `max_lr / (div_factor * final_div_factor)` at `total_steps` and stays there.
    Both phases follow a half cosine by default (fastai), or a straight line
    with `anneal_strategy="linear"`. Use it to fine-tune in few epochs at a high
    peak rate: pick `max_lr` with `kt.lr_find`, and set `total_steps` to
    `epochs * steps_per_epoch`.

    The argument names and `final_div_factor` follow PyTorch's `OneCycleLR`;
    `pct_start` defaults to fastai's 0.25 (PyTorch uses 0.3). Momentum cycling,
    the other half of Smith's policy, is not part of it: Keras optimizers hold
    their momentum (`beta_1`) as a constant, not a schedulable variable.

    The schedule is a plain `LearningRateSchedule` of the optimizer's step, so
    it runs inside the compiled train step on every backend, is saved with the
    optimizer in `.keras` files, and composes with `kt.DiscriminativeLR`: each
    layer group then follows the same cycle scaled by its multiplier.

    Args:
        max_lr: the peak learning rate. Must be finite and > 0.
        total_steps: the number of optimizer steps the cycle spans, e.g.
            `epochs * steps_per_epoch`. Must be a positive integer.
        pct_start: the fraction of `total_steps` spent warming up. Defaults to
            0.25. Must be in (0, 1).
        div_factor: the starting rate is `max_lr / div_factor`. Defaults to 25.
        final_div_factor: the final rate is `max_lr / (div_factor *
            final_div_factor)`. Defaults to 1e4.
        anneal_strategy: `"cos"` (default) or `"linear"`.
        name: the name scope of the computation. Defaults to `"OneCycle"`.

    Example:

    >>> import keras
    >>> import keras_transfer as kt
    >>> schedule = kt.schedules.OneCycle(max_lr=1e-2, total_steps=100)
    >>> optimizer = keras.optimizers.SGD(learning_rate=schedule)
    >>> [round(float(schedule(step)), 6) for step in (0, 25, 100)]
    [0.0004, 0.01, 0.0]
    """

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        pct_start: float = 0.25,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        anneal_strategy: str = "cos",
        name: str = "OneCycle",
    ):
        super().__init__()
        self.max_lr = check_number(max_lr, "max_lr", "the peak learning rate", low=0, low_open=True)
        self.total_steps = check_integer(
            total_steps,
            "total_steps",
            "the number of optimizer steps the schedule spans, e.g. `epochs * steps_per_epoch`",
            low=1,
        )
        self.pct_start = check_number(
            pct_start,
            "pct_start",
            "the share of `total_steps` spent warming up, e.g. 0.25",
            low=0,
            high=1,
            low_open=True,
            high_open=True,
        )
        self.div_factor = check_number(
            div_factor,
            "div_factor",
            "the cycle starts at `max_lr / div_factor`",
            low=0,
            low_open=True,
        )
        self.final_div_factor = check_number(
            final_div_factor,
            "final_div_factor",
            "the cycle ends at `max_lr / (div_factor * final_div_factor)`",
            low=0,
            low_open=True,
        )
        if anneal_strategy not in _STRATEGIES:
            raise ValueError(
                f"`anneal_strategy` must be one of {_STRATEGIES}, got {anneal_strategy!r}."
            )
        self.anneal_strategy = anneal_strategy
        self.name = name

    @property
    def initial_lr(self) -> float:
        """The rate at step 0: `max_lr / div_factor`."""
        return self.max_lr / self.div_factor

    @property
    def final_lr(self) -> float:
        """The rate from `total_steps` on: `initial_lr / final_div_factor`."""
        return self.initial_lr / self.final_div_factor

    def __call__(self, step):
        with keras.name_scope(self.name):
            step = ops.cast(step, "float32")
            warmup_steps = self.pct_start * self.total_steps
            # Each phase moves from `start` to `end` as `end + (start - end) * w`,
            # with `w` computed from the fraction of the phase still to go: the
            # rate then keeps its relative precision near the tiny final value.
            to_go_up = ops.clip((warmup_steps - step) / warmup_steps, 0.0, 1.0)
            to_go_down = ops.clip(
                (self.total_steps - step) / (self.total_steps - warmup_steps), 0.0, 1.0
            )
            rising = self.max_lr + (self.initial_lr - self.max_lr) * self._weight(to_go_up)
            falling = self.final_lr + (self.max_lr - self.final_lr) * self._weight(to_go_down)
            return ops.where(step < warmup_steps, rising, falling)

    def _weight(self, to_go):
        if self.anneal_strategy == "linear":
            return to_go
        # (1 + cos(pi * done)) / 2 == sin(pi * to_go / 2) ** 2
        return ops.square(ops.sin((math.pi / 2) * to_go))

    def get_config(self):
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "anneal_strategy": self.anneal_strategy,
            "name": self.name,
        }
