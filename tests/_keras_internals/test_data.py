"""Pins what `keras_transfer._keras_internals.data` relies on in TensorFlow."""

import pytest

from keras_transfer._keras_internals.data import dataset_op_names

tf = pytest.importorskip("tensorflow")


def test_op_names_include_the_pipeline_and_the_body_of_its_map():
    dataset = (
        tf.data.Dataset.range(8)
        .map(lambda x: tf.cast(x, "float32") + tf.random.uniform(()))
        .shuffle(8, seed=0)
        .batch(4)
    )
    names = dataset_op_names(dataset)
    assert {"RangeDataset", "MapDataset", "ShuffleDatasetV3", "BatchDatasetV2"} <= set(names)
    # The `map` body lives in the graph's function library, not its nodes.
    assert "RandomUniform" in names
    assert "AddV2" in names


def test_a_deterministic_pipeline_has_no_random_op():
    dataset = tf.data.Dataset.from_tensor_slices([1.0, 2.0]).map(lambda x: x * 2).batch(2)
    names = dataset_op_names(dataset)
    assert "TensorSliceDataset" in names and "Mul" in names
    assert not [name for name in names if "Random" in name]
