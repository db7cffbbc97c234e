"""One training run made of several `fit` calls, its callbacks bound to the whole model.

A frozen-prefix cache trains a cut-off top model, one `fit` per stage, while
the user's callbacks must see the whole model: a backup or checkpoint of the
top alone could not be resumed in another stage, and `EarlyStopping` must
stop the run, not one stage. `RelayedRun` binds the callbacks to the whole
model once, runs `on_train_begin` and `on_train_end` once around all stages,
and hands each stage's `fit` a relay that passes the epoch (and, where a
callback needs them, batch) events on.
"""

from __future__ import annotations

import keras

from keras_transfer._keras_internals.training import sync_jax_state, take_initial_epoch

_BATCH_HOOKS = (
    "on_batch_begin",
    "on_batch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_batch_begin",
    "on_test_batch_end",
)


def needs_batch_events(callbacks) -> bool:
    """Whether any callback overrides a batch hook of `keras.callbacks.Callback`."""
    return any(
        getattr(type(callback), hook) is not getattr(keras.callbacks.Callback, hook)
        for callback in callbacks
        for hook in _BATCH_HOOKS
    )


class RelayedRun:
    """The callbacks and history of a run over several `fit` calls.

    Args:
        model: the whole model, which the callbacks see.
        callbacks: the user's callbacks (a `FreezeSchedule` among them).
        epochs: the run's last epoch, for the callbacks' `params`.
        verbose: the run's verbosity, for the callbacks' `params`.
    """

    def __init__(self, model: keras.Model, callbacks: list, epochs: int, verbose):
        self.model = model
        self.history = keras.callbacks.History()
        self.callbacks = keras.callbacks.CallbackList(
            [*callbacks, self.history], model=model, epochs=epochs, verbose=verbose
        )
        self.batch_events = needs_batch_events(callbacks)
        self.logs: dict = {}

    def begin(self, initial_epoch: int) -> int:
        """Runs `on_train_begin`; returns the epoch to start at (where a
        backup callback resumes, else `initial_epoch`)."""
        self.model.stop_training = False
        self.callbacks.on_train_begin()
        return take_initial_epoch(self.model) or initial_epoch

    def fit(self, trainer: keras.Model, begin: int, end: int, **fit_args) -> None:
        """Runs epochs `begin` to `end - 1` as `trainer.fit(**fit_args)`."""
        relay = (_BatchRelay if self.batch_events else _EpochRelay)(self)
        progress = _RunProgbar(self.callbacks.params["epochs"])
        trainer.fit(initial_epoch=begin, epochs=end, callbacks=[relay, progress], **fit_args)

    @property
    def stopped(self) -> bool:
        return bool(self.model.stop_training)

    def end(self) -> keras.callbacks.History:
        """Runs `on_train_end`; returns the run's history, all stages in one."""
        self.callbacks.on_train_end(logs=self.logs)
        return self.history


class _EpochRelay(keras.callbacks.Callback):
    """Passes one `fit`'s epoch and test events to the run's callbacks.

    `on_train_begin` and `on_train_end` are the run's, not the stage's, so
    they are not passed on.
    """

    def __init__(self, run: RelayedRun):
        super().__init__()
        self.run = run

    def on_epoch_begin(self, epoch, logs=None):
        self.run.callbacks.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.run.callbacks.on_epoch_end(epoch, logs)
        self.run.logs = logs or {}
        self._pass_stop()

    def on_test_begin(self, logs=None):
        self.run.callbacks.on_test_begin(logs)

    def on_test_end(self, logs=None):
        self.run.callbacks.on_test_end(logs)

    def _pass_stop(self):
        # `EarlyStopping` and friends stop the whole model; the stage's fit
        # watches the model it trains.
        if self.run.stopped:
            self.model.stop_training = True


class _BatchRelay(_EpochRelay):
    """Also passes batch events on, for callbacks that act on every batch.

    On JAX a fit keeps the training model's state outside its variables
    between batches. Writing it back before each event lets callbacks bound
    to the whole model read and restore (`NonFiniteGuard`) current values,
    and the next step starts from what they leave.
    """

    def on_train_batch_begin(self, batch, logs=None):
        sync_jax_state(self.model)
        self.run.callbacks.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        sync_jax_state(self.model)
        self.run.callbacks.on_train_batch_end(batch, logs)
        self._pass_stop()

    def on_test_batch_begin(self, batch, logs=None):
        sync_jax_state(self.model)
        self.run.callbacks.on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        sync_jax_state(self.model)
        self.run.callbacks.on_test_batch_end(batch, logs)


class _RunProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, counting epochs out of the run's, not the stage's."""

    def __init__(self, run_epochs: int):
        super().__init__()
        self.run_epochs = run_epochs

    def set_params(self, params):
        super().set_params({**params, "epochs": self.run_epochs})
