"""`callbacks._process_coordination` in one process (every backend).

Across two processes it is tested by tests/distribution/test_multi_process.py
(SafeBackupAndRestore: one writer, a barrier, the same backup on resume).
"""

import keras
import pytest

from keras_transfer.callbacks import _process_coordination as coordination


def test_one_process_is_the_writer_and_collectives_do_nothing():
    assert (coordination.process_index(), coordination.process_count()) == (0, 1)
    assert coordination.is_writer()
    coordination.barrier("test")
    assert coordination.same_in_every_process(7, "a number") == 7


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution runs on JAX only.")
def test_this_process_only_sets_the_distribution_aside_and_back():
    distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices())
    with distribution.scope():
        with coordination.this_process_only():
            assert keras.distribution.distribution() is None
            variable = keras.Variable(1.0)  # Not placed over the job's devices.
        assert keras.distribution.distribution() is distribution
    assert float(variable.numpy()) == 1.0
