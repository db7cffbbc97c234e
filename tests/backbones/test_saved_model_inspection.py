"""Reading a loaded SavedModel. TensorFlow (a core dependency) loads it on any
Keras backend, so these run on all three."""

import pytest
import tensorflow as tf
from backbones.saved_models import (
    save_encoder,
    save_named_variables,
    save_signature_only,
)

from keras_transfer.backbones.saved_model_inspection import (
    accepts_training,
    float_dtype,
    function_of,
    saved_variables,
)

ENCODER_VARIABLES = [
    f"encoder/layer_{i}/{leaf}:0"
    for i in range(3)
    for leaf in (("kernel", "bias", "moving_mean") if i == 1 else ("kernel", "bias"))
]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return tf.saved_model.load(save_encoder(tmp_path_factory.mktemp("encoder")))


def test_function_of_picks_call_or_a_signature(encoder, tmp_path):
    assert function_of(encoder, None, "enc") == encoder.__call__
    assert function_of(encoder, "serving_default", "enc") is encoder.signatures["serving_default"]
    with pytest.raises(ValueError, match="'enc' has no signature 'nope'.*'serving_default'"):
        function_of(encoder, "nope", "enc")
    signature_only = tf.saved_model.load(save_signature_only(tmp_path))
    with pytest.raises(ValueError, match="no `__call__` function.*'serving_default'"):
        function_of(signature_only, None, "sig")


def test_accepts_training(encoder):
    assert accepts_training(encoder.__call__)
    assert not accepts_training(encoder.signatures["serving_default"])
    assert accepts_training(lambda inputs, training=False: inputs)
    assert not accepts_training(len)  # No signature Python can read.


def test_saved_variables_follow_tf_hub_trainability(encoder):
    pairs = saved_variables(encoder, [encoder.__call__, *encoder.regularization_losses])
    assert [variable.name for variable, _ in pairs] == ENCODER_VARIABLES
    assert [name for (v, trainable), name in zip(pairs, ENCODER_VARIABLES) if not trainable] == [
        "encoder/layer_1/moving_mean:0"
    ]


def test_saved_variables_in_the_order_first_read(tmp_path):
    names = ["z/kernel", "a/kernel", "m/moving_mean"]
    loaded = tf.saved_model.load(save_named_variables(tmp_path, names))
    pairs = saved_variables(loaded, [loaded.__call__])
    assert [(v.name, trainable) for v, trainable in pairs] == [
        ("z/kernel:0", True),
        ("a/kernel:0", True),
        ("m/moving_mean:0", False),
    ]


def test_float_dtype_is_that_of_the_first_float_variable():
    counter = tf.Variable(3, dtype=tf.int64)
    assert float_dtype([counter, tf.Variable(1.0, dtype=tf.float16)]) == "float16"
    assert float_dtype([counter]) == "float32"
