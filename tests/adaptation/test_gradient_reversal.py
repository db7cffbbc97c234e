import os

import keras
import numpy as np
import pytest
from keras import ops
from testing_utils import values

from keras_transfer.adaptation import GradientReversal
from keras_transfer.adaptation.gradient_reversal import reverse_gradient


class TraceCounter(keras.layers.Layer):
    """Counts how often its Python `call` runs: once per trace on TF and JAX."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, inputs):
        self.calls += 1
        return inputs


def sum_of_outputs(y_true, y_pred):
    return ops.sum(y_pred)


def reversal_model(strength, counter=None):
    """x -> Dense a (trained) -> GradientReversal -> Dense w (frozen) -> sum.

    With the loss `sum(outputs)`, the loss is linear in a's kernel K, so one
    SGD step at rate 1 moves K by exactly `strength * outer(sum(x), w)`.
    """
    inputs = keras.Input((3,), name="x")
    hidden = keras.layers.Dense(4, use_bias=False, name="a")(inputs)
    if counter is not None:
        hidden = counter(hidden)
    hidden = GradientReversal(strength, name="reversal")(hidden)
    frozen = keras.layers.Dense(1, use_bias=False, name="w", trainable=False)
    model = keras.Model(inputs, frozen(hidden))
    model.compile(
        optimizer=keras.optimizers.SGD(1.0),
        loss=sum_of_outputs,
    )
    return model


def data(samples=4):
    rng = np.random.default_rng(0)
    return rng.normal(size=(samples, 3)).astype("float32"), np.zeros((samples, 1), "float32")


def expected_step(model, x, strength):
    w = values(model.get_layer("w").weights)[0][:, 0]
    # Without reversal the gradient of sum(x K w) wrt K is outer(sum x, w) and
    # SGD subtracts it; reversed and scaled, it adds strength times it.
    return strength * np.outer(x.sum(axis=0), w)


@pytest.mark.parametrize("strength", [0.0, 0.5, 2.0])
def test_one_sgd_step_moves_weights_by_minus_strength_times_gradient(strength):
    model = reversal_model(strength)
    x, y = data()
    before = values(model.get_layer("a").weights)[0]
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    moved = values(model.get_layer("a").weights)[0] - before
    np.testing.assert_allclose(moved, expected_step(model, x, strength), rtol=1e-5, atol=1e-6)


def test_forward_is_identity_and_keeps_dtype():
    x = np.array([[1.5, -2.0, 0.0]], dtype="float32")
    out = GradientReversal(3.0)(x)
    np.testing.assert_array_equal(ops.convert_to_numpy(out), x)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


def test_functional_form_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    layer = GradientReversal(1.0)
    out = layer(np.ones((2, 3), dtype="float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert keras.backend.standardize_dtype(reverse_gradient(out, layer.strength).dtype) == "float16"


class StrengthPerStep(keras.callbacks.Callback):
    def __init__(self, layer_name, strengths):
        super().__init__()
        self.layer_name, self.strengths = layer_name, strengths

    def on_train_batch_begin(self, batch, logs=None):
        # On JAX, `self.model` first writes the values fit holds outside the
        # model back into its variables.
        self.model.get_layer(self.layer_name).set_strength(self.strengths[batch])


def test_strength_changes_within_fit_without_retrace():
    x, y = data(samples=6)
    strengths = [0.5, 0.0, 2.0]
    counters = []
    moves = []
    for change in (False, True):
        keras.backend.clear_session()
        counter = TraceCounter()
        model = reversal_model(0.5, counter)
        before = values(model.get_layer("a").weights)[0]
        callbacks = [StrengthPerStep("reversal", strengths)] if change else []
        model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
        counters.append(counter.calls)
        moves.append(values(model.get_layer("a").weights)[0] - before)
    assert counters[0] == counters[1]  # same number of traces (TF, JAX) / calls (torch)
    step = np.zeros((3, 4), "float32")
    w = values(model.get_layer("w").weights)[0][:, 0]
    for batch, strength in enumerate(strengths):
        step += strength * np.outer(x[2 * batch : 2 * batch + 2].sum(axis=0), w)
    np.testing.assert_allclose(moves[1], step, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), True, "1", None])
def test_bad_strength_is_refused(bad):
    with pytest.raises(ValueError, match="`strength` must be a finite number >= 0"):
        GradientReversal(bad)
    layer = GradientReversal(1.0)
    with pytest.raises(ValueError, match=">= 0 \\(0 turns adaptation off"):
        layer.set_strength(bad)


def test_save_and_load_keeps_the_current_strength(tmp_path):
    model = reversal_model(1.0)
    model.get_layer("reversal").set_strength(0.3)
    path = os.path.join(tmp_path, "reversal.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True, compile=False)
    layer = loaded.get_layer("reversal")
    assert isinstance(layer, GradientReversal)
    assert float(ops.convert_to_numpy(layer.strength)) == pytest.approx(0.3)
    assert layer.strength.trainable is False
    x, _ = data()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
