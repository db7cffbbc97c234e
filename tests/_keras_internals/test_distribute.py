"""Pins what `_keras_internals.distribute` relies on.

The failure it refuses in advance (Keras' own `fit` under a two-worker
`MultiWorkerMirroredStrategy`) is reproduced by
tests/distribution/test_multi_worker_tensorflow.py, on two real workers.
"""

import keras
import pytest
from testing_utils import dense_model

from keras_transfer._keras_internals.distribute import refuse_multi_worker_strategy


def test_refuse_multi_worker_strategy_is_a_no_op_elsewhere():
    model = dense_model()
    model.compile(keras.optimizers.Adam(), "mse")
    for subject in (None, model, model.optimizer):
        refuse_multi_worker_strategy("kt.Piece", subject)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.distribute is TensorFlow's."
)
def test_a_model_keeps_the_strategy_it_was_built_under():
    # `refuse_multi_worker_strategy(piece, model)` reads `model.distribute_strategy`,
    # also after the scope is left (FreezeSchedule is often made outside it).
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = dense_model()
        optimizer = keras.optimizers.Adam()
    assert model.distribute_strategy is strategy
    assert isinstance(strategy.extended.worker_devices, tuple)
    assert len(strategy.extended.worker_devices) == strategy.num_replicas_in_sync == 1
    refuse_multi_worker_strategy("kt.Piece", model)  # One worker: fine.
    refuse_multi_worker_strategy("kt.Piece", optimizer)
