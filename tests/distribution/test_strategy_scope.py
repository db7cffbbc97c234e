"""DiscriminativeLR and its wrapped optimizer live under one tf.distribute scope."""

import keras
import pytest
from testing_utils import dense_model

import keras_transfer as kt

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.distribute strategies are TensorFlow's."
)


@pytest.fixture
def strategy():
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(["/cpu:0"])


def test_an_optimizer_made_outside_the_scope_is_refused(strategy):
    model = dense_model()
    inner = keras.optimizers.Adam(1e-3)
    with strategy.scope():
        with pytest.raises(ValueError, match="Create both inside the same `with strategy.scope"):
            kt.DiscriminativeLR(inner, model)


def test_an_optimizer_made_in_the_scope_builds_mirrored_slots(strategy):
    with strategy.scope():
        model = dense_model()
        optimizer = kt.DiscriminativeLR(keras.optimizers.Adam(1e-3), model)
        optimizer.build(model.trainable_variables)
    slots = optimizer.inner_optimizer.variables[2:]
    assert slots and all(type(v.value).__name__ == "MirroredVariable" for v in slots)
