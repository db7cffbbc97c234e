"""Pins what `keras_transfer._keras_internals.training` relies on in Keras."""

import keras
import numpy as np
from testing_utils import dense_model, regression_data, values

from keras_transfer._keras_internals.training import (
    readable_here,
    set_initial_epoch,
    sync_jax_state,
)


class ReadsAfterSyncing(keras.callbacks.Callback):
    """Reads the head's kernel after the first step, through a sync only."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            model = self._model  # `Callback.model` would sync on JAX by itself.
            sync_jax_state(model)
            self.after_first_step = values([model.get_layer("head").kernel])[0]


def test_sync_jax_state_writes_the_pending_step_into_the_variables():
    # On JAX, a fit holds the step's values outside the variables (their own
    # buffers are donated and unreadable) until synced; elsewhere a no-op.
    x, y = regression_data()
    model = dense_model()
    initial = values([model.get_layer("head").kernel])[0]
    model.compile(keras.optimizers.SGD(0.1), "mse")
    callback = ReadsAfterSyncing()
    model.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0, callbacks=[callback])
    assert not np.allclose(callback.after_first_step, initial)
    final = values([model.get_layer("head").kernel])[0]
    np.testing.assert_array_equal(callback.after_first_step, final)  # one step in all


class StartsAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch
        self.epochs_run = []

    def on_train_begin(self, logs=None):
        set_initial_epoch(self.model, self.epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs_run.append(epoch)


def test_set_initial_epoch_in_on_train_begin_resumes_fit_there():
    x, y = regression_data()
    model = dense_model()
    model.compile("sgd", "mse")
    callback = StartsAtEpoch(2)
    history = model.fit(x, y, epochs=4, verbose=0, callbacks=[callback])
    assert callback.epochs_run == [2, 3]
    assert len(history.history["loss"]) == 2


def test_readable_here_only_outside_a_scope_that_leaves_the_variable_out():
    variable = keras.Variable(1.0)
    other = keras.Variable(2.0)
    assert readable_here(variable)
    with keras.StatelessScope(state_mapping=[(variable, 3.0)]):
        assert readable_here(variable)
        assert not readable_here(other)
    assert readable_here(other)


class AsksForEpoch(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        set_initial_epoch(self.model, 3)


def test_take_initial_epoch_reads_a_resume_request_once():
    from keras_transfer._keras_internals.training import take_initial_epoch

    model = dense_model()
    assert take_initial_epoch(model) is None
    callbacks = keras.callbacks.CallbackList([AsksForEpoch()], model=model)
    callbacks.on_train_begin()
    assert take_initial_epoch(model) == 3
    assert take_initial_epoch(model) is None
    # Cleared, a later `fit` starts where it is told to.
    model.compile("sgd", "mse")
    x, y = regression_data()
    history = model.fit(x, y, epochs=2, verbose=0)
    assert history.epoch == [0, 1]


def test_compile_like_shares_the_optimizer_loss_and_metrics():
    from keras_transfer._keras_internals.training import compile_like

    x, y = regression_data()
    source = dense_model()
    source.compile(keras.optimizers.Adam(0.01), "mse", metrics=["mae"])
    # Another model computing the same outputs: the same layers, from fresh inputs.
    inputs = keras.Input((6,))
    hidden = inputs
    for name in ("a", "b", "head"):
        hidden = source.get_layer(name)(hidden)
    twin = keras.Model(inputs, hidden)
    compile_like(twin, source)
    assert twin.optimizer is source.optimizer
    history = twin.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert int(source.optimizer.iterations) == 4
    # The loss mean and metrics the twin's steps updated are the source's own.
    results = {m.name: m.result() for m in source.metrics}
    np.testing.assert_allclose(float(results["loss"]), history["loss"][-1], rtol=1e-6)
    np.testing.assert_allclose(
        float(results["compile_metrics"]["mae"]), history["mae"][-1], rtol=1e-6
    )
    twin.compile("sgd", "mse")  # Compiling the twin again leaves the source as it was.
    assert source.optimizer.name.startswith("adam")
