import warnings

import keras
import numpy as np
import pytest
from testing_utils import values

import keras_transfer as kt


def clusters(per_class=6, classes=3, seed=0):
    """Examples around one direction per class, in 5 dimensions."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    x = 2.0 * np.eye(classes, 5)[labels] + 0.3 * rng.normal(size=(len(labels), 5))
    return x.astype("float32"), labels


def encoder(trainable=True):
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(8, activation="tanh", name="dense")], name="encoder"
    )
    model.trainable = trainable
    return model


def encode(model, x):
    return keras.ops.convert_to_numpy(model.predict(x, verbose=0))


def test_predicts_the_softmax_of_scaled_cosines_to_the_support_means():
    x, y = clusters()
    net = encoder()
    model = kt.prototype_classifier(net, x, y, scale=5.0)
    support = encode(net, x)
    support /= np.linalg.norm(support, axis=1, keepdims=True)
    prototypes = np.stack([support[y == c].mean(axis=0) for c in range(3)])
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    queries, query_labels = clusters(seed=1)
    features = encode(net, queries)
    logits = 5.0 * (features / np.linalg.norm(features, axis=1, keepdims=True)) @ prototypes.T
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predicted = model.predict(queries, verbose=0)
    np.testing.assert_allclose(predicted, expected, rtol=1e-4, atol=1e-6)
    assert (predicted.argmax(axis=1) == query_labels).mean() > 0.9


def test_saves_and_loads_in_safe_mode(tmp_path):
    x, y = clusters()
    model = kt.prototype_classifier(encoder(), x, y, activation=None)
    path = str(tmp_path / "prototypes.keras")
    model.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded.get_layer("prototypes"), kt.PrototypeHead)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5)


def test_fine_tunes_from_the_prototypes_with_a_frozen_encoder():
    x, y = clusters()
    net = encoder(trainable=False)
    model = kt.prototype_classifier(net, x, y, scale=2.0)
    encoder_before = values(net.weights)
    head_before = values(model.get_layer("prototypes").weights)
    history = model.fit(x, y, epochs=5, batch_size=6, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    for before, after in zip(encoder_before, values(net.weights)):
        np.testing.assert_array_equal(before, after)
    assert not np.allclose(head_before[0], values(model.get_layer("prototypes").weights)[0])


def test_works_with_feature_cache():
    x, y = clusters()
    model = kt.prototype_classifier(encoder(trainable=False), x, y)
    history = kt.FeatureCache(model).fit(x, y, epochs=2, batch_size=6, verbose=0)
    assert len(history.history["loss"]) == 2


def test_feature_maps_are_averaged():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), 4)
    images = (rng.normal(size=(8, 3, 3, 2)) + 3 * np.eye(2)[y][:, None, None, :]).astype("float32")
    conv = keras.Sequential([keras.Input((3, 3, 2)), keras.layers.Conv2D(4, 1)], name="conv")
    model = kt.prototype_classifier(conv, images, y)
    assert model.predict(images, verbose=0).shape == (8, 2)
    assert any(
        isinstance(layer, keras.layers.GlobalAveragePooling2D) for layer in kt.nested_layers(model)
    )


def test_a_text_backbone_averages_its_tokens_over_the_padding_mask():
    inputs = {
        "token_ids": keras.Input((None,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input((None,), dtype="int32", name="padding_mask"),
    }
    sequence = keras.layers.Embedding(20, 4)(inputs["token_ids"])
    text = keras.Model(inputs, {"sequence_output": sequence}, name="text")
    ids = np.array([[1, 2, 0], [3, 0, 0], [4, 5, 6], [7, 8, 0]], "int32")
    x = {"token_ids": ids, "padding_mask": (ids > 0).astype("int32")}
    y = np.array([0, 0, 1, 1])
    model = kt.prototype_classifier(text, x, y)
    tokens = keras.ops.convert_to_numpy(text.predict(x, verbose=0)["sequence_output"])
    mask = x["padding_mask"][:, :, None]
    features = (tokens * mask).sum(axis=1) / mask.sum(axis=1)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    prototypes = np.stack([features[y == c].mean(axis=0) for c in range(2)])
    np.testing.assert_allclose(
        values(model.get_layer("prototypes").weights)[0], prototypes, rtol=1e-5, atol=1e-6
    )
    # The pooling needs the padding mask: FeatureCache cuts after the whole
    # feature model, whose output is the head's only input.
    text.trainable = False
    cached, _ = kt.FeatureCache(model).extract(x, y)
    np.testing.assert_allclose(np.asarray(cached), (tokens * mask).sum(1) / mask.sum(1), 1e-5, 1e-6)


def test_bad_input_says_what_to_do():
    x, y = clusters()
    with pytest.raises(ValueError, match=r"Classes \[1\] have no support examples"):
        kt.prototype_classifier(encoder(), x[y != 1], y[y != 1])
    with pytest.raises(ValueError, match="one class only"):
        kt.prototype_classifier(encoder(), x[y == 0], y[y == 0])
    with pytest.raises(ValueError, match="18 examples but `y_support` has 17"):
        kt.prototype_classifier(encoder(), x, y[:17])
    with pytest.raises(TypeError, match="integer class ids"):
        kt.prototype_classifier(encoder(), x, y.astype("float32"))
    with pytest.raises(TypeError, match="Keras model"):
        kt.prototype_classifier(lambda t: t, x, y)
    inputs = keras.Input((5,))
    dict_encoder = keras.Model(inputs, {"sequence_output": keras.layers.Dense(2)(inputs)})
    with pytest.raises(ValueError, match="without a pooled output"):
        kt.prototype_classifier(dict_encoder, x, y)
