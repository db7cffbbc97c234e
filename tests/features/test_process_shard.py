"""`kt.process_shard`: each process's share of every global batch.

The shares of all processes, joined in process order, must give back each
global batch (that is what Keras' JAX trainer builds from them). The
two-process training runs are in tests/distribution/test_multi_process.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_transfer as kt


def batches(data, size):
    rows = len(keras.tree.flatten(data)[0])
    return [
        keras.tree.map_structure(lambda a, s=start: a[s : s + size], data)
        for start in range(0, rows, size)
    ]


def joined(parts):
    return keras.tree.map_structure(lambda *leaves: np.concatenate(leaves), *parts)


def assert_same(first, second):
    keras.tree.assert_same_structure(first, second)
    for a, b in zip(keras.tree.flatten(first), keras.tree.flatten(second)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("num_processes", [2, 3])
def test_array_shares_join_into_the_global_batches(num_processes):
    rows, global_batch = 30, 6 * num_processes // 2 * 2
    x = np.arange(rows * 2, dtype="float32").reshape(rows, 2)
    data = (x, {"label": np.arange(rows)})
    shares = [
        kt.process_shard(data, global_batch, num_processes=num_processes, process_id=i)
        for i in range(num_processes)
    ]
    per_process = global_batch // num_processes
    # Row counts: every process trains the same number of steps.
    assert len({len(share[0]) for share in shares}) == 1
    for step, expected in enumerate(batches(data, global_batch)):
        parts = [batches(share, per_process)[step] for share in shares]
        assert_same(joined(parts), expected)


def test_documented_example():
    x = np.arange(10)
    np.testing.assert_array_equal(
        kt.process_shard(x, global_batch_size=4, num_processes=2, process_id=0), [0, 1, 4, 5, 8]
    )


def test_one_process_keeps_everything():
    x = np.arange(12).reshape(6, 2)
    np.testing.assert_array_equal(kt.process_shard(x, global_batch_size=4), x)


def test_dataset_shares_join_into_the_global_batches():
    # Source and target batches of different sizes, as `kt.domain_pairs` makes.
    source = np.arange(24, dtype="float32").reshape(12, 2)
    target = np.arange(12, dtype="float32").reshape(6, 2) + 100
    labels = np.arange(12)
    dataset = tf.data.Dataset.zip(
        (
            tf.data.Dataset.from_tensor_slices(source).batch(4),
            tf.data.Dataset.from_tensor_slices(target).batch(2),
            tf.data.Dataset.from_tensor_slices(labels).batch(4),
        )
    ).map(lambda s, t, y: ({"source": s, "target": t}, y))
    shares = [
        list(kt.process_shard(dataset, num_processes=2, process_id=i).as_numpy_iterator())
        for i in range(2)
    ]
    expected = list(dataset.as_numpy_iterator())
    assert len(shares[0]) == len(shares[1]) == len(expected) == 3
    for step, batch in enumerate(expected):
        assert shares[0][step][0]["target"].shape == (1, 2)
        assert_same(joined([shares[0][step], shares[1][step]]), batch)


def test_a_batch_that_does_not_split_evenly_is_refused():
    with pytest.raises(ValueError, match="Drop the last 1 rows"):
        kt.process_shard(np.arange(9), global_batch_size=4, num_processes=2, process_id=0)
    with pytest.raises(ValueError, match="use a multiple of 2"):
        kt.process_shard(np.arange(9), global_batch_size=3, num_processes=2, process_id=0)
    dataset = tf.data.Dataset.from_tensor_slices(np.arange(9)).batch(3)
    shard = kt.process_shard(dataset, num_processes=2, process_id=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="drop_remainder=True"):
        list(shard.as_numpy_iterator())


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="needs the `global_batch_size`"):
        kt.process_shard(np.arange(4))
    dataset = tf.data.Dataset.from_tensor_slices(np.arange(4)).batch(2)
    with pytest.raises(ValueError, match="its global batches"):
        kt.process_shard(dataset, global_batch_size=2)
    with pytest.raises(ValueError, match="must be below"):
        kt.process_shard(np.arange(4), 2, num_processes=2, process_id=2)
    with pytest.raises(ValueError, match="same number of rows"):
        kt.process_shard((np.arange(4), np.arange(6)), 2)
