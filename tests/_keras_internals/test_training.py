"""Pins what `keras_transfer._keras_internals.training` relies on in Keras."""

import keras
import numpy as np
from testing_utils import dense_model, regression_data, values

from keras_transfer._keras_internals.training import set_initial_epoch, sync_jax_state


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
