"""Training state: what a running `fit` keeps outside the model's variables."""

from __future__ import annotations

import keras


def sync_jax_state(model: keras.Model) -> None:
    """Writes the values a JAX `fit` holds outside the variables back into them.

    On JAX, Keras' trainer keeps the variables' values in a state tuple during
    an epoch and writes them back only when asked (`jax_state_sync`, which
    `Callback.model` calls on every access). Anything that reads, assigns or
    re-splits variables mid-fit must sync first, or the trainer's pending state
    overwrites it. A no-op on other backends.
    """
    sync = getattr(model, "jax_state_sync", None)
    if callable(sync):
        sync()


def set_initial_epoch(model: keras.Model, epoch: int) -> None:
    """Makes a `fit` that has just begun start at `epoch`, as a resume does.

    Relies on `Model._initial_epoch`, which `fit` reads after
    `on_train_begin`; `keras.callbacks.BackupAndRestore` sets it the same way.
    """
    model._initial_epoch = epoch
