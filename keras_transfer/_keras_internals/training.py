"""Training state: what a running `fit` keeps outside the model's variables."""

from __future__ import annotations

import keras

from keras_transfer._keras_internals.layers import attach_state, attached_state


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


def readable_here(variable: keras.Variable) -> bool:
    """Whether `variable`'s value can be read at this point of a step.

    False inside a `keras.StatelessScope` that does not map the variable:
    where a JAX train or test step computes its logs, Keras maps only the
    metrics' variables, and a model variable's own buffer has been handed to
    the step (and emptied), so reading it fails. True everywhere else.
    Relies on `keras.src.backend.common.stateless_scope.get_stateless_scope()`
    (the scope in force, or `None`) and `StatelessScope.get_current_value`.
    """
    from keras.src.backend.common.stateless_scope import get_stateless_scope

    scope = get_stateless_scope()
    return scope is None or scope.get_current_value(variable) is not None


def take_initial_epoch(model: keras.Model) -> int | None:
    """The epoch a callback's `on_train_begin` asked `fit` to start at, or `None`.

    `set_initial_epoch` and Keras' `BackupAndRestore` ask by setting
    `Model._initial_epoch`; this reads the request and clears it, for a
    training loop that runs `on_train_begin` itself and then several `fit`
    calls, which would each start at the requested epoch again. Relies on
    `Model._initial_epoch` (`None` unless set).
    """
    epoch = getattr(model, "_initial_epoch", None)
    model._initial_epoch = None
    return epoch


def compile_like(model: keras.Model, source: keras.Model) -> None:
    """Compiles `model` to train as the compiled `source` does, on the same objects.

    For a model that computes `source`'s outputs from other inputs (its
    trainable top, fed cached activations). `model` gets `source`'s optimizer
    (its state and step count go on), compiled loss, compiled metrics and
    loss mean, the objects themselves, so a step of `model` updates the
    metric values that `source` and callbacks bound to it report, and its
    `run_eagerly`, `steps_per_execution` and `jit_compile`. What
    `attach_state` attached to `source` (a `kt.L2SP` or `kt.EWC` penalty and
    its log) is attached to `model` too: its log joins `model`'s metrics and
    its running sums travel in a JAX step's state. Relies on
    `Trainer.compile` and on Keras keeping the compiled loss, the compiled
    metrics and the loss mean in `_compile_loss`, `_compile_metrics` and
    `_loss_tracker`, which `Trainer.metrics` and the train step read.
    """
    model.compile(
        optimizer=source.optimizer,
        run_eagerly=source.run_eagerly,
        steps_per_execution=source.steps_per_execution,
        jit_compile=source.jit_compile,
        auto_scale_loss=False,
    )
    model._compile_loss = source._compile_loss
    model._compile_metrics = source._compile_metrics
    model._loss_tracker = source._loss_tracker
    for name, value in attached_state(source).items():
        attach_state(model, name, value)
