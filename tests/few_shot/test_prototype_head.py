import keras
import numpy as np
import pytest
from testing_utils import values

import keras_transfer as kt


def normalised(array):
    return array / np.linalg.norm(array, axis=-1, keepdims=True)


def support(seed=0):
    rng = np.random.default_rng(seed)
    labels = np.array([0, 0, 1, 1, 1, 2])
    return rng.normal(size=(6, 4)).astype("float32"), labels


def test_prototypes_are_class_means_of_normalised_features():
    features, labels = support()
    head = kt.PrototypeHead(3)
    head.set_prototypes(features, labels)
    expected = np.stack([normalised(features)[labels == c].mean(axis=0) for c in range(3)])
    np.testing.assert_allclose(values(head.weights)[0], expected, rtol=1e-6)


def test_logits_are_the_scaled_cosine_similarity():
    features, labels = support()
    head = kt.PrototypeHead(3, scale=7.0)
    head.set_prototypes(features, labels)
    queries = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    prototypes = values(head.weights)[0]
    expected = 7.0 * normalised(queries) @ normalised(prototypes).T
    logits = keras.ops.convert_to_numpy(head(queries))
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_scale_is_trained_or_fixed():
    learnable = kt.PrototypeHead(3)
    learnable.build((None, 4))
    fixed = kt.PrototypeHead(3, learnable_scale=False)
    fixed.build((None, 4))
    assert sorted(v.name for v in learnable.trainable_weights) == ["prototypes", "scale"]
    assert [v.name for v in fixed.trainable_weights] == ["prototypes"]
    assert [v.name for v in fixed.non_trainable_weights] == ["scale"]


def test_config_round_trip_and_registration():
    head = kt.PrototypeHead(4, scale=3.0, learnable_scale=False, name="protos")
    clone = kt.PrototypeHead.from_config(head.get_config())
    assert (clone.num_classes, clone.initial_scale, clone.learnable_scale) == (4, 3.0, False)
    assert clone.name == "protos"
    assert keras.saving.get_registered_object("keras_transfer>PrototypeHead") is kt.PrototypeHead


def test_prototypes_train_like_any_weight():
    features, labels = support()
    inputs = keras.Input((4,))
    head = kt.PrototypeHead(3)
    model = keras.Model(inputs, head(inputs))
    head.set_prototypes(features, labels)
    before = values(head.weights)
    model.compile(
        keras.optimizers.SGD(0.5), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(features, labels, epochs=3, verbose=0)
    after = values(head.weights)
    assert not np.allclose(before[0], after[0])
    assert not np.isclose(before[1], after[1])


def test_a_class_without_support_examples_is_named():
    features, labels = support()
    with pytest.raises(ValueError, match=r"Classes \[3\] have no support examples"):
        kt.PrototypeHead(4).set_prototypes(features, labels)


def test_bad_support_is_refused_with_the_fix():
    features, labels = support()
    head = kt.PrototypeHead(3)
    with pytest.raises(ValueError, match=r"labels \[5\] are outside 0..2"):
        head.set_prototypes(features, np.array([0, 1, 2, 0, 1, 5]))
    with pytest.raises(TypeError, match="integer class ids"):
        head.set_prototypes(features, labels.astype("float32") + 0.5)
    with pytest.raises(ValueError, match="6 examples but `support_labels` has 5"):
        head.set_prototypes(features, labels[:5])
    with pytest.raises(ValueError, match="NaN"):
        head.set_prototypes(np.full((6, 4), np.nan), labels)
    head.set_prototypes(features, labels)
    with pytest.raises(ValueError, match="have 3 dimensions but the head was built for 4"):
        head.set_prototypes(features[:, :3], labels)
    with pytest.raises(ValueError, match="num_classes"):
        kt.PrototypeHead(1)
    with pytest.raises(ValueError, match="scale"):
        kt.PrototypeHead(3, scale=0.0)
