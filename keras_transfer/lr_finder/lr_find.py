"""`lr_find`: the learning-rate range test (Smith, 2017; fastai's `lr_find`)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings

import keras
import numpy as np

from keras_transfer._checks import check_integer, check_number
from keras_transfer._keras_internals.optimizers import (
    configured_learning_rate,
    set_configured_learning_rate,
)
from keras_transfer.lr_finder import _suggestions


@dataclasses.dataclass
class LRFinderResult:
    """The curve of a learning-rate range test, and the rate it suggests.

    Attributes:
        learning_rates: the rate of each step, increasing exponentially.
        losses: the smoothed training loss at each step.
        suggestion: the suggested rate, or None when the curve was too short
            to read (the loss diverged within a few steps).
        method: how `suggestion` was read off the curve.
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    suggestion: float | None
    method: str = "valley"

    def suggest(self, method: str = "valley") -> float | None:
        """Reads a rate off the curve as fastai does.

        Args:
            method: `"valley"` (default; halfway down the longest run of
                decreasing losses), `"steep"` (where the loss falls fastest)
                or `"minimum"` (a tenth of the rate at the lowest loss).
        """
        return _suggestions.suggest(self.learning_rates, self.losses, method)

    def plot(self, ax=None):
        """Plots the loss against the rate (log scale) and marks the suggestion.

        Args:
            ax: the matplotlib `Axes` to draw on; a new figure's by default.

        Returns:
            The matplotlib `Axes`.
        """
        import matplotlib.pyplot as plt  # slow to import: only when plotting

        if ax is None:
            _, ax = plt.subplots()
        ax.plot(self.learning_rates, self.losses)
        ax.set_xscale("log")
        ax.set_xlabel("Learning rate")
        ax.set_ylabel("Loss (smoothed)")
        if self.suggestion is not None:
            ax.axvline(
                self.suggestion,
                color="red",
                linestyle="--",
                label=f"{self.method}: {self.suggestion:.2e}",
            )
            ax.legend()
        return ax


def lr_find(
    model: keras.Model,
    data,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    batch_size: int | None = None,
    beta: float = 0.98,
    divergence_factor: float | None = 4.0,
    suggest: str = "valley",
) -> LRFinderResult:
    """Runs the learning-rate range test and puts the model back as it was.

    Trains for up to `num_steps` batches while the learning rate rises
    exponentially from `start_lr` to `end_lr`, recording the training loss
    smoothed as fastai does (an exponential moving average with bias
    correction). It stops early once the smoothed loss exceeds
    `divergence_factor` times the best so far. Then it restores the model's
    variables and the optimizer's (its state, step count and rate) bit for
    bit, so training afterwards is exactly as if it had never run. Use it
    before fine-tuning to choose a rate, e.g. `OneCycle`'s `max_lr`: take the
    suggestion, or a rate somewhat below the bottom of the curve.

    The model must be built and compiled with the optimizer it will train
    with. The rate swept is the optimizer's own: with `kt.DiscriminativeLR`
    it is the top group's (the other groups follow at their multipliers),
    and a `LearningRateSchedule` is swapped out for the test and put back. Only
    the order in which array data is shuffled moves on. The divergence rule
    assumes a loss that is not negative.

    Args:
        model: a built, compiled Keras model.
        data: the training data: an `(x, y)` or `(x, y, sample_weight)` tuple
            of arrays, or anything `fit` takes as `x` that yields `(x, y)`
            batches (a `tf.data.Dataset`, a `keras.utils.PyDataset`, ...).
        start_lr: the first rate. Defaults to 1e-7.
        end_lr: the last rate. Defaults to 10.
        num_steps: the number of batches. Defaults to 100.
        batch_size: the batch size for array data; defaults to 32.
        beta: the smoothing factor of the loss. Defaults to 0.98.
        divergence_factor: stop once the smoothed loss exceeds this multiple
            of the best; `None` always runs `num_steps`. Defaults to 4.
        suggest: how to read the suggestion off the curve: `"valley"`
            (default, as fastai), `"steep"` or `"minimum"`; see
            `LRFinderResult.suggest`.

    Returns:
        An `LRFinderResult` with the rates, smoothed losses, the suggestion
        and a `plot()` method.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> y = x.sum(axis=1, keepdims=True)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> result = kt.lr_find(model, (x, y), start_lr=1e-4, end_lr=10, num_steps=40)
    >>> len(result.learning_rates) <= 40, 1e-4 <= result.suggestion <= 10
    (True, True)
    """
    _check_model(model)
    _check_arguments(start_lr, end_lr, num_steps, beta, divergence_factor, suggest)
    fit_data = _fit_data(data, batch_size)
    optimizer = model.optimizer
    if not optimizer.built:
        # As `fit` would, so that there is a state to put back.
        optimizer.build(model.trainable_variables)
    owner = _rate_owner(optimizer)
    sweep = np.geomspace(start_lr, end_lr, num_steps)
    saved = [np.array(keras.ops.convert_to_numpy(v)) for v in _state(model)]
    saved_history = getattr(model, "history", None)
    test = _RangeTest(owner, sweep, beta, divergence_factor)
    try:
        with _settable_rate(model, owner):
            # One batch per epoch: each epoch's loss is then that batch's, and
            # the variables are up to date at each epoch start on every backend.
            model.fit(
                **fit_data,
                epochs=2 * num_steps,  # a dataset that runs out loses an epoch a pass
                steps_per_epoch=1,
                verbose=0,
                callbacks=[test],
            )
    finally:
        for variable, value in zip(_state(model), saved):
            variable.assign(value)
        model.history = saved_history
        model.stop_training = False
    return _result(test, sweep, num_steps, suggest)


def _result(test, sweep, num_steps, method) -> LRFinderResult:
    losses = np.array(test.losses)
    learning_rates = sweep[: len(losses)]
    if len(losses) < num_steps and not test.diverged:
        warnings.warn(
            f"The data ran out after {len(losses)} of {num_steps} steps; give more "
            "batches (e.g. repeat the dataset) for a full curve.",
            stacklevel=3,
        )
    suggestion = _suggestions.suggest(learning_rates, losses, method)
    if suggestion is None:
        cause = (
            f"the loss diverged at {learning_rates[-1]:.2e}; lower `start_lr`"
            if test.diverged
            else "raise `num_steps`"
        )
        warnings.warn(f"Too few steps ({len(losses)}) to suggest a rate: {cause}.", stacklevel=3)
    return LRFinderResult(learning_rates, losses, suggestion, method)


class _RangeTest(keras.callbacks.Callback):
    """Sets each step's rate and records the smoothed loss."""

    def __init__(self, owner, sweep, beta, divergence_factor):
        super().__init__()
        self.owner = owner
        self.sweep = sweep
        self.beta = beta
        self.divergence_factor = divergence_factor
        self.losses = []
        self.diverged = False
        self._average = 0.0
        self._best = math.inf

    def on_train_batch_begin(self, batch, logs=None):
        self.owner.learning_rate = float(self.sweep[len(self.losses)])

    def on_train_batch_end(self, batch, logs=None):
        loss = float(keras.ops.convert_to_numpy(logs["loss"]))
        self._average = self.beta * self._average + (1 - self.beta) * loss
        smoothed = self._average / (1 - self.beta ** (len(self.losses) + 1))
        self.losses.append(smoothed)
        self._best = min(self._best, smoothed)
        limit = self.divergence_factor
        if not math.isfinite(smoothed) or (limit is not None and smoothed > limit * self._best):
            self.diverged = True
        if self.diverged or len(self.losses) == len(self.sweep):
            self.model.stop_training = True


@contextlib.contextmanager
def _settable_rate(model, owner):
    """Puts a variable in place of the optimizer's schedule, for the test."""
    schedule = configured_learning_rate(owner)
    if isinstance(schedule, keras.Variable):
        yield
        return
    rate = keras.Variable(0.0, name="learning_rate", dtype=keras.config.floatx(), trainable=False)
    saved_train_function = model.train_function
    # Setting it tracks it among the optimizer's variables, so that a compiled
    # step reads it from the optimizer's state. The new state layout also makes
    # JAX trace the step afresh (TF gets a new train function); both find their
    # old ones again afterwards.
    set_configured_learning_rate(owner, rate)
    model.train_function = None
    try:
        yield
    finally:
        set_configured_learning_rate(owner, schedule)
        model.train_function = saved_train_function


def _state(model):
    return list(model.variables) + list(model.optimizer.variables)


def _rate_owner(optimizer):
    """The optimizer whose `learning_rate` the update reads (inside loss scaling)."""
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer


def _fit_data(data, batch_size) -> dict:
    if isinstance(data, tuple):
        if len(data) not in (2, 3):
            raise ValueError(
                "Array data must be an `(x, y)` or `(x, y, sample_weight)` tuple; got a "
                f"tuple of {len(data)}."
            )
        x, y, *sample_weight = data
        return {
            "x": x,
            "y": y,
            "sample_weight": sample_weight[0] if sample_weight else None,
            "batch_size": batch_size or 32,
        }
    if isinstance(data, (np.ndarray, list, dict)) or keras.ops.is_tensor(data):
        raise TypeError(
            "`data` must give targets too: an `(x, y)` tuple of arrays, or a dataset "
            f"of `(x, y)` batches; got {type(data).__name__}."
        )
    if batch_size is not None:
        raise ValueError("`batch_size` is for array data; a dataset is already batched.")
    return {"x": data}


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"`lr_find` needs a Keras model, got {type(model).__name__}.")
    if not getattr(model, "compiled", False) or model.optimizer is None:
        raise ValueError(
            "Compile the model first, with the optimizer and loss you will train with: "
            "`model.compile(optimizer=..., loss=...)`, then `kt.lr_find(model, data)`."
        )
    if not model.built:
        raise ValueError(
            "The model is not built, so there are no weights to put back after the "
            "test. Build it first: give it a `keras.Input`, or call it on a batch."
        )
    if model.steps_per_execution != 1:
        raise ValueError(
            "`lr_find` sets the rate batch by batch; compile with steps_per_execution=1 "
            f"for the test (got {model.steps_per_execution})."
        )


def _check_arguments(start_lr, end_lr, num_steps, beta, divergence_factor, method):
    check_number(start_lr, "start_lr", "the first rate of the sweep", low=0, low_open=True)
    check_number(end_lr, "end_lr", "the last rate of the sweep", low=0, low_open=True)
    if not end_lr > start_lr:
        raise ValueError(f"`end_lr` ({end_lr}) must be larger than `start_lr` ({start_lr}).")
    check_integer(num_steps, "num_steps", "the number of batches of the sweep", low=2)
    check_number(
        beta, "beta", "the smoothing of the loss; fastai uses 0.98", low=0, high=1, high_open=True
    )
    if divergence_factor is not None:
        check_number(
            divergence_factor,
            "divergence_factor",
            "the test stops once the loss exceeds this multiple of the best; "
            "fastai uses 4, and None never stops early",
            low=1,
            low_open=True,
        )
    if method not in _suggestions.METHODS:
        raise ValueError(f"`suggest` must be one of {_suggestions.METHODS}, got {method!r}.")
