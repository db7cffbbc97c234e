"""`NonFiniteGuard`: a NaN or Inf loss never reaches the weights or a checkpoint."""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_transfer._checks import check_integer
from keras_transfer._keras_internals.training import sync_jax_state

_MODES = ("raise", "skip")


class NonFiniteLossError(RuntimeError):
    """Raised by `kt.NonFiniteGuard` when a training loss is NaN or Inf."""


@keras.saving.register_keras_serializable(package="keras_transfer")
class NonFiniteGuard(keras.callbacks.Callback):
    """Stops or skips training steps whose loss is NaN or Inf, keeping the
    weights, the optimizer state and every checkpoint clean.

    `keras.callbacks.TerminateOnNaN` stops after the bad step has already been
    applied: the model in memory holds NaN weights, and when it stops
    gracefully the epoch still ends, so `BackupAndRestore` or `ModelCheckpoint`
    then save those weights. This guard undoes the bad step before anything
    else sees it:

    - `on_nonfinite="raise"` (default): the model's weights, optimizer state
      and metrics go back to what they were at the start of the epoch (the
      state the last epoch-end checkpoint holds), then `kt.NonFiniteLossError`
      is raised. `fit` ends there, without `on_epoch_end` or `on_train_end`,
      so no checkpoint is written and `BackupAndRestore` keeps its backup.
      The run's history so far is in `model.history.history`.
    - `on_nonfinite="skip"`: the bad step is undone (weights, optimizer state
      including its iteration count, metrics) and training goes on with the
      next batch, as if that batch had not been there. After `max_skips`
      skipped steps in one `fit`, it raises as above. This keeps a copy of
      the whole training state in memory, refreshed before every step.

    A step is bad when the monitored loss is NaN or Inf, or when it made a
    trainable weight NaN or Inf (a NaN input can give a finite loss and NaN
    gradients). A NaN input that the network turns into finite values (ReLU
    maps NaN to 0 on some CPU kernels) does no numerical harm and is not
    seen: check inputs where they are made if NaN there means bad data.

    The number of steps skipped so far is added to the epoch logs as
    `skipped_steps`. With `steps_per_execution > 1` a "step" is one execution
    (all its batches are undone together).

    Put it first in the `callbacks` list, so that it runs before any callback
    that saves.

    Args:
        on_nonfinite: `"raise"` or `"skip"`.
        monitor: the log entry to check, `"loss"` by default.
        max_skips: with `"skip"`, the number of skipped steps after which the
            run is stopped anyway (a loss that keeps diverging is not noise).
        verbose: 1 (default) prints a line for each skipped step; 0 is silent.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> x = np.ones((4, 2), "float32")
    >>> x[2] = np.nan  # One bad example, in the second batch of two.
    >>> guard = kt.NonFiniteGuard(on_nonfinite="skip", verbose=0)
    >>> history = model.fit(x, np.ones((4, 1)), batch_size=2, shuffle=False,
    ...                     callbacks=[guard], verbose=0)
    >>> history.history["skipped_steps"], bool(np.isfinite(model.get_weights()[0]).all())
    ([1.0], True)
    """

    def __init__(
        self,
        on_nonfinite: str = "raise",
        monitor: str = "loss",
        max_skips: int = 10,
        verbose: int = 1,
    ):
        super().__init__()
        if on_nonfinite not in _MODES:
            raise ValueError(f"`on_nonfinite` must be one of {_MODES}, got {on_nonfinite!r}.")
        check_integer(max_skips, "max_skips", "bad steps skipped before stopping", low=0)
        self.on_nonfinite = on_nonfinite
        self.monitor = monitor
        self.max_skips = max_skips
        self.verbose = verbose
        self.skipped_steps = 0
        self._epoch = 0
        self._saved = None

    def on_train_begin(self, logs=None):
        self.skipped_steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._saved = None

    def on_train_batch_begin(self, batch, logs=None):
        # Taken here, after every `on_epoch_begin` (a FreezeSchedule stage
        # change) has run.
        if self.on_nonfinite == "skip" or self._saved is None:
            self._saved = self._snapshot()

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(
                f"NonFiniteGuard monitors {self.monitor!r}, which is not in the "
                f"training logs (they have {sorted(logs or {})}). Pass "
                "`monitor=` one of those."
            )
        value = float(np.asarray(value))
        if math.isfinite(value) and self._weights_finite():
            return
        self._restore()
        if self.on_nonfinite == "skip" and self.skipped_steps < self.max_skips:
            self.skipped_steps += 1
            if self.verbose:
                print(
                    f"NonFiniteGuard: {self._what_went_wrong(value)} at epoch "
                    f"{self._epoch}, batch {batch}; step skipped "
                    f"({self.skipped_steps}/{self.max_skips})."
                )
            return
        raise NonFiniteLossError(self._failure_message(batch, value))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["skipped_steps"] = float(self.skipped_steps)

    def _what_went_wrong(self, value: float) -> str:
        if math.isfinite(value):
            return f"{self.monitor} was finite but the step made weights NaN or Inf"
        return f"{self.monitor} was {value}"

    def _failure_message(self, batch, value) -> str:
        if self.on_nonfinite == "skip":
            reason = f"after {self.skipped_steps} skipped steps (`max_skips`)"
            restored = "before that step"
        else:
            reason = "with on_nonfinite='raise'"
            restored = f"at the start of epoch {self._epoch}"
        return (
            f"Training: {self._what_went_wrong(value)} at epoch {self._epoch}, "
            f"batch {batch}; stopped {reason}. Weights, optimizer state and metrics "
            f"are restored to those {restored}, and no checkpoint was written "
            "with the bad values. Look for NaN/Inf in the data, or lower the "
            "learning rate; `on_nonfinite='skip'` steps over rare bad batches."
        )

    def _weights_finite(self) -> bool:
        # A NaN input can give a finite loss (ReLU maps NaN to 0 on some
        # backends) and still NaN gradients, so the weights are checked too.
        variables = self.model.trainable_variables
        if not variables:
            return True
        flags = [keras.ops.all(keras.ops.isfinite(v.value)) for v in variables]
        return bool(keras.ops.all(keras.ops.stack(flags)))

    def _tracked_variables(self) -> list:
        model = self.model
        variables = list(model.variables) + list(model.metrics_variables)
        if model.optimizer is not None:
            variables += list(model.optimizer.variables)
        return variables

    def _snapshot(self) -> list:
        # Copies: JAX donates the buffers a step reads, and the other backends
        # update variables in place.
        return [(v, keras.ops.copy(v.value)) for v in self._tracked_variables()]

    def _restore(self) -> None:
        # On JAX the step's results are still pending outside the variables;
        # restoring before they are written back would be overwritten by them.
        sync_jax_state(self.model)
        for variable, value in self._saved:
            variable.assign(value)

    def get_config(self):
        return {
            "on_nonfinite": self.on_nonfinite,
            "monitor": self.monitor,
            "max_skips": self.max_skips,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
