import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transfer.features.pipeline import (
    augmentation_layers,
    is_dataset,
    numpy_batches,
    predict_padded,
    random_ops,
)


def test_numpy_batches_of_arrays_dicts_and_datasets():
    x = {"a": np.arange(10).reshape(5, 2), "b": np.arange(5)}
    y = np.arange(5) * 10
    batches = list(numpy_batches(x, y, 2))
    assert [len(inputs["b"]) for inputs, _ in batches] == [2, 2, 1]
    np.testing.assert_array_equal(batches[-1][0]["a"], [[8, 9]])
    np.testing.assert_array_equal(batches[-1][1], [40])
    assert all(labels is None for _, labels in numpy_batches(y, None, 3))
    dataset = tf.data.Dataset.from_tensor_slices((np.arange(5.0), y)).batch(4)
    from_dataset = list(numpy_batches(dataset, None, 2))  # a dataset keeps its own batches
    assert [len(inputs) for inputs, _ in from_dataset] == [4, 1]
    assert isinstance(from_dataset[0][0], np.ndarray)
    np.testing.assert_array_equal(from_dataset[1][1], [40])
    unlabelled = tf.data.Dataset.from_tensor_slices(np.arange(3.0)).batch(2)
    assert [labels for _, labels in numpy_batches(unlabelled, None, 2)] == [None, None]


def test_is_dataset():
    assert is_dataset(tf.data.Dataset.range(3))
    assert is_dataset(tf.data.Dataset.range(3).batch(2).map(lambda x: x))
    assert not is_dataset(np.zeros(3)) and not is_dataset([1, 2])


class Recorder(keras.layers.Layer):
    sizes: list = []

    def call(self, inputs):
        Recorder.sizes.append(inputs["x"].shape[0])
        return inputs["x"] * 2.0 + keras.ops.cast(inputs["k"], "float32")[:, None]


def test_predict_padded_runs_at_the_batch_size_and_returns_only_the_real_rows():
    x = {"x": keras.Input((3,), name="x"), "k": keras.Input((), dtype="int32", name="k")}
    model = keras.Model(x, Recorder()(x))
    inputs = {"x": np.arange(15.0, dtype="float32").reshape(5, 3), "k": np.arange(5, dtype="int32")}
    Recorder.sizes = []
    outputs = predict_padded(model, inputs, batch_size=8)
    assert set(Recorder.sizes) == {8}
    np.testing.assert_allclose(outputs, inputs["x"] * 2 + np.arange(5)[:, None])
    Recorder.sizes = []
    longer = predict_padded(model, inputs, batch_size=4)  # longer than the size: as it is
    # 5 rows as they are (TensorFlow may trace them with an unknown batch size).
    assert 4 not in Recorder.sizes and longer.shape == (5, 3)
    np.testing.assert_allclose(longer, outputs)


def test_random_ops_find_random_maps_but_not_shuffling():
    data = tf.data.Dataset.from_tensor_slices(np.zeros((8, 2), "float32"))
    assert random_ops(data.shuffle(8, seed=1).batch(4)) == set()
    noisy = data.map(lambda a: a + tf.random.normal(tf.shape(a)))
    assert "RandomStandardNormal" in random_ops(noisy.batch(4))
    flipped = data.map(lambda a: tf.image.random_flip_left_right(a[None, :, None])[0, :, 0])
    assert random_ops(flipped)


def test_augmentation_layers_at_any_depth():
    augment = keras.Sequential(
        [keras.layers.RandomFlip(), keras.Sequential([keras.layers.RandomRotation(0.1)])]
    )
    found = [type(layer).__name__ for layer in augmentation_layers(augment)]
    assert found == ["RandomFlip", "RandomRotation"]
    flip = keras.layers.RandomFlip()
    assert augmentation_layers(flip) == [flip]
    assert augmentation_layers(flip, include_self=False) == []
    assert augmentation_layers(keras.Sequential([keras.layers.Dense(2)])) == []


@pytest.mark.parametrize("name", ["MixUp", "CutMix", "AugMix", "RandAugment", "RandomZoom"])
def test_augmentation_names_cover_keras_random_layers(name):
    if not hasattr(keras.layers, name):
        pytest.skip(f"keras.layers.{name} does not exist in Keras {keras.__version__}")
    layer = getattr(keras.layers, name)(**({"height_factor": 0.1} if name == "RandomZoom" else {}))
    assert augmentation_layers(layer)[0] is layer  # (AugMix holds random layers too)
