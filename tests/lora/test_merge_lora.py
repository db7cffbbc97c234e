import keras
import numpy as np
import pytest
from lora.lora_testing import bert_batch, bert_classifier, lora_dense_model, perturb_factors
from testing_utils import dense_model, regression_data, values

import keras_transfer as kt
from keras_transfer._keras_internals.layers import flatten_layers
from keras_transfer.groups.layer_variables import lora_factors
from keras_transfer.lora.merge_lora import merged_copy


def lora_flags(model):
    return [getattr(layer, "lora_enabled", False) for layer in flatten_layers(model)]


def test_merging_keeps_the_outputs_and_leaves_a_plain_model(tmp_path):
    model = lora_dense_model(rank=2, alpha=5)
    plain_params = dense_model().count_params()
    x, _ = regression_data()
    before = model.predict(x, verbose=0)
    layer = model.get_layer("a")
    factors = [layer.lora_kernel_a, layer.lora_kernel_b]
    kernel, factor_a, factor_b = values([layer.weights[0], *factors])
    kt.merge_lora(model)
    np.testing.assert_allclose(model.predict(x, verbose=0), before, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        values([layer.kernel])[0], kernel + 2.5 * factor_a @ factor_b, rtol=1e-6, atol=1e-6
    )
    assert not any(lora_flags(model))
    assert [v.path for v in model.weights] == ["a/kernel", "a/bias", "b/kernel", "b/bias"] + [
        "head/kernel",
        "head/bias",
    ]
    assert model.count_params() == plain_params
    assert "lora_rank" not in model.get_layer("a").get_config()
    path = str(tmp_path / "merged.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert not any(lora_flags(loaded))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), before, rtol=1e-5, atol=1e-5)


def test_merged_convolutions_and_embeddings_keep_the_outputs():
    inputs = keras.Input((6, 6, 2))
    hidden = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    hidden = keras.layers.Flatten()(hidden)
    convnet = keras.Model(inputs, keras.layers.Dense(1, name="head")(hidden))
    kt.enable_lora(convnet, rank=2, alpha=3)
    perturb_factors(convnet)
    images = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype("float32")
    expected = convnet.predict(images, verbose=0)
    kt.merge_lora(convnet)
    np.testing.assert_allclose(convnet.predict(images, verbose=0), expected, atol=1e-5)

    classifier = bert_classifier(num_layers=1)
    summary = kt.enable_lora(classifier, rank=2, alpha=4, layers="embedding|query")
    assert {row[1] for row in summary.layers} == {"ReversibleEmbedding", "Embedding", "EinsumDense"}
    perturb_factors(classifier)
    x, _ = bert_batch()
    expected = classifier.predict(x, verbose=0)
    kt.merge_lora(classifier)
    assert not any(lora_flags(classifier))
    np.testing.assert_allclose(classifier.predict(x, verbose=0), expected, atol=1e-5)


def test_lora_can_be_enabled_again_on_the_merged_model():
    model = lora_dense_model()
    kt.merge_lora(model)
    summary = kt.enable_lora(model, rank=3)
    assert summary.layers[0][0] == "a" and model.get_layer("a").lora_rank == 3


def test_merging_a_model_without_lora_is_an_error():
    with pytest.raises(ValueError, match="no layer with LoRA enabled.*nothing to merge"):
        kt.merge_lora(dense_model())


def test_merged_copy_serves_the_merged_kernels_and_leaves_the_model_its_adapters():
    classifier = bert_classifier(num_layers=1)
    kt.enable_lora(classifier, rank=2, alpha=4, layers="query|value|logits")
    perturb_factors(classifier)
    x, _ = bert_batch()
    expected = classifier.predict(x, verbose=0)
    factors_before = values(lora_factors(classifier))

    copy = merged_copy(classifier)

    assert copy is not classifier
    assert not any(lora_flags(copy)) and any(lora_flags(classifier))
    assert not lora_factors(copy)
    np.testing.assert_allclose(copy.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    for before, after in zip(factors_before, values(lora_factors(classifier))):
        np.testing.assert_array_equal(before, after)
    # The copy is the in-place merge's result, without touching the model.
    kt.merge_lora(classifier)
    for merged, copied in zip(values(classifier.weights), values(copy.weights)):
        np.testing.assert_allclose(copied, merged, rtol=1e-6, atol=1e-6)


def test_merged_copy_of_a_model_without_lora_is_the_model():
    model = dense_model()
    assert merged_copy(model) is model
