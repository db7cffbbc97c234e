"""Models, data and checks shared by the `kt.HubLayer` tests (TensorFlow only)."""

import keras
import numpy as np
from backbones.saved_models import INPUT_DIM
from testing_utils import values

from keras_transfer.backbones import HubLayer


def data(samples=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, INPUT_DIM)).astype("float32")
    return x, (x.sum(axis=1, keepdims=True) + 1.0).astype("float32")


def hub_model(handle, trainable=True, functional=False):
    hub = HubLayer(handle, trainable=trainable, name="encoder")
    head = keras.layers.Dense(1, name="head")
    if not functional:
        return keras.Sequential([keras.Input((INPUT_DIM,)), hub, head])
    inputs = keras.Input((INPUT_DIM,))
    return keras.Model(inputs, head(hub(inputs)))


def fit(model, epochs=1, callbacks=(), optimizer=None, initial_epoch=0):
    if getattr(model, "optimizer", None) is None:
        model.compile(optimizer or keras.optimizers.SGD(0.05), "mse")
    x, y = data()
    return model.fit(
        x,
        y,
        batch_size=8,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=list(callbacks),
        verbose=0,
        shuffle=False,
    )


def hub_values(model):
    """The SavedModel variables' values by their SavedModel names."""
    names = model.get_layer("encoder").saved_variable_names
    return {names[v.path]: values([v])[0] for v in model.get_layer("encoder").weights}


def select(named_values, prefix):
    return {name: value for name, value in named_values.items() if name.startswith(prefix)}


def assert_same(before, after):
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)


def assert_all_changed(before, after):
    for name in before:
        assert not np.array_equal(before[name], after[name]), name
