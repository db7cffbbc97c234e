import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_transfer as kt


def frozen_backbone():
    backbone = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="tanh", name="encoder")],
        name="backbone",
    )
    backbone.trainable = False
    return backbone


def classifier(backbone, before=()):
    model = keras.Sequential(
        [keras.Input((6,)), *before, backbone, keras.layers.Dense(3, name="head")]
    )
    model.compile(
        keras.optimizers.Adam(0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def data(samples=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 6)).astype("float32")
    y = (x[:, :3].argmax(axis=1)).astype("int32")
    return x, y


class CountCalls(keras.layers.Layer):
    calls = 0

    def call(self, inputs):
        CountCalls.calls += 1
        return inputs


def test_head_trained_on_cached_features_equals_head_trained_through_the_backbone():
    x, y = data()
    cached = classifier(frozen_backbone())
    reference = classifier(frozen_backbone())
    reference.set_weights(cached.get_weights())
    kt.FeatureCache(cached).fit(x, y, epochs=3, batch_size=32, shuffle=False, verbose=0)
    reference.fit(x, y, epochs=3, batch_size=32, shuffle=False, verbose=0)
    for a, b in zip(cached.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_backbone_runs_once_over_the_data():
    x, y = data()
    backbone = keras.Sequential(
        [keras.Input((6,)), CountCalls(), keras.layers.Dense(8, name="encoder")], name="backbone"
    )
    backbone.trainable = False
    cache = kt.FeatureCache(classifier(backbone), batch_size=32)
    CountCalls.calls = 0
    cache.fit(x, y, epochs=4, batch_size=32, verbose=0)
    cache.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert CountCalls.calls <= 3 + 1  # three batches, plus at most one trace


def test_the_model_is_the_full_model_afterwards():
    x, y = data()
    model = classifier(frozen_backbone())
    history = kt.FeatureCache(model).fit(x, y, epochs=20, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] > history.history["accuracy"][0]
    _, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy == pytest.approx(history.history["accuracy"][-1], abs=0.1)


def test_features_on_disk_equal_features_in_memory(tmp_path):
    x, y = data()
    model = classifier(frozen_backbone())
    in_memory, labels = kt.FeatureCache(model, batch_size=40).extract(x, y)
    on_disk, disk_labels = kt.FeatureCache(model, directory=tmp_path, batch_size=40).extract(x, y)
    assert isinstance(on_disk, np.memmap)
    np.testing.assert_allclose(np.asarray(on_disk), in_memory, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(disk_labels), labels)


def test_dataset_input_and_validation_data():
    x, y = data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(96, seed=1).batch(32)
    model = classifier(frozen_backbone())
    cache = kt.FeatureCache(model)
    features, labels = cache.extract(dataset)
    assert features.shape == (96, 8) and labels.shape == (96,)
    history = cache.fit(dataset, validation_data=(x, y), epochs=2, verbose=0)
    assert "val_accuracy" in history.history


def test_trainable_backbone_is_refused():
    backbone = frozen_backbone()
    backbone.trainable = True
    with pytest.raises(ValueError, match="has trainable weights.*trainable = False"):
        kt.FeatureCache(classifier(backbone))


def test_random_augmentation_before_the_backbone_is_refused():
    model = classifier(frozen_backbone(), before=[keras.layers.GaussianNoise(0.1)])
    with pytest.raises(ValueError, match="Random layers.*gaussian_noise"):
        kt.FeatureCache(model)


def test_random_dataset_is_refused_but_shuffling_is_fine():
    x, y = data()
    model = classifier(frozen_backbone())
    noisy = tf.data.Dataset.from_tensor_slices((x, y)).map(
        lambda a, b: (a + tf.random.normal(tf.shape(a)), b)
    )
    with pytest.raises(ValueError, match="draws random numbers"):
        kt.FeatureCache(model).extract(noisy.batch(32))
    shuffled = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(96).batch(32)
    kt.FeatureCache(model).extract(shuffled)


def test_empty_data_is_refused():
    x, y = data()
    model = classifier(frozen_backbone())
    empty = tf.data.Dataset.from_tensor_slices((x[:0], y[:0])).batch(32)
    for arguments in ((x[:0], y[:0]), (empty,)):
        with pytest.raises(ValueError, match="no examples"):
            kt.FeatureCache(model).fit(*arguments, epochs=1, verbose=0)


def test_uncompiled_model_and_ambiguous_backbone():
    model = keras.Sequential([keras.Input((6,)), frozen_backbone(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="call `model.compile"):
        kt.FeatureCache(model)
    model.compile("adam", "mse")
    second = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)], name="second")
    two = keras.Sequential([keras.Input((6,)), frozen_backbone(), second])
    two.compile("adam", "mse")
    with pytest.raises(ValueError, match="2 nested models.*backbone="):
        kt.FeatureCache(two)


def functional_backbone():
    inputs = keras.Input((6,))
    backbone = keras.Model(inputs, keras.layers.Dense(8, name="encoder")(inputs), name="encoder")
    backbone.trainable = False
    return backbone


@pytest.mark.parametrize("make_backbone", [frozen_backbone, functional_backbone])
def test_functional_model_is_cut_after_the_backbone(make_backbone):
    x, y = data()
    inputs = keras.Input((6,))
    features = make_backbone()(inputs)
    outputs = keras.layers.Dense(3, name="head")(keras.layers.Dropout(0.1)(features))
    model = keras.Model(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cache = kt.FeatureCache(model)
    assert [layer.name for layer in cache.head.layers if layer.weights] == ["head"]
    before = model.get_layer("head").get_weights()[0].copy()
    cache.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(before, model.get_layer("head").get_weights()[0])


def test_layers_before_the_backbone_are_part_of_the_features():
    x, y = data()
    model = classifier(frozen_backbone(), before=[keras.layers.Rescaling(10.0)])
    features, _ = kt.FeatureCache(model).extract(x, y)
    backbone = model.get_layer("backbone")
    expected = keras.ops.convert_to_numpy(backbone(10.0 * x))
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)


def test_trainable_layer_before_the_backbone_is_refused():
    model = classifier(frozen_backbone(), before=[keras.layers.Dense(6, name="adapter")])
    with pytest.raises(ValueError, match=r"a layer before it: \['adapter'\]"):
        kt.FeatureCache(model)


class RecordBatchSizes(keras.layers.Layer):
    """Records the batch dimension of every Python call (a trace, or an eager call)."""

    sizes: list = []

    def call(self, inputs):
        RecordBatchSizes.sizes.append(inputs.shape[0])
        return inputs


def test_every_batch_of_the_pass_has_one_shape_and_padding_changes_nothing():
    # A shorter last batch (70 = 2 * 32 + 6) or validation set (10) would trace
    # the extractor's predict step again: they are padded to the batch size.
    x, y = data(samples=70)
    backbone = keras.Sequential(
        [keras.Input((6,)), RecordBatchSizes(), keras.layers.Dense(8, name="encoder")],
        name="backbone",
    )
    backbone.trainable = False
    model = classifier(backbone)
    cache = kt.FeatureCache(model, batch_size=32)
    RecordBatchSizes.sizes = []
    features, labels = cache.extract(x, y)
    validation_features, _ = cache.extract(x[:10], y[:10])
    assert RecordBatchSizes.sizes and set(RecordBatchSizes.sizes) == {32}
    assert features.shape == (70, 8) and labels.shape == (70,)
    expected = keras.ops.convert_to_numpy(backbone(x))
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(validation_features, expected[:10], rtol=1e-5, atol=1e-6)


def test_features_on_disk_are_raw_bin_files(tmp_path):
    x, y = data(samples=40)
    cache = kt.FeatureCache(classifier(frozen_backbone()), directory=tmp_path, batch_size=16)
    features, labels = cache.extract(x, y)
    files = sorted(path.name for path in tmp_path.iterdir())
    assert [name.rsplit("_", 2)[1:] for name in files] == [
        ["features", "0.bin"],
        ["labels", "0.bin"],
    ]
    raw = np.fromfile(tmp_path / files[0], dtype=features.dtype).reshape(features.shape)
    np.testing.assert_array_equal(raw, np.asarray(features))


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True, None])
def test_bad_batch_size_is_refused(batch_size):
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
        kt.FeatureCache(classifier(frozen_backbone()), batch_size=batch_size)


def test_augmentation_nested_in_a_layer_before_the_backbone_is_refused():
    augment = keras.Sequential([keras.layers.RandomTranslation(0.1, 0.1)], name="augment")
    inputs = keras.Input((4, 4, 1))
    backbone = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(8)], name="backbone"
    )
    backbone.trainable = False
    model = keras.Model(inputs, keras.layers.Dense(2)(backbone(augment(inputs))))
    model.compile("adam", "mse")
    with pytest.raises(ValueError, match=r"Random layers \['augment'\]"):
        kt.FeatureCache(model, backbone="backbone")
