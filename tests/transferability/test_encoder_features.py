import keras
import numpy as np
import pytest

from keras_transfer.transferability.encoder_features import encoder_features


def text_backbone(outputs=("sequence_output", "pooled_output")):
    """A KerasHub-like backbone: dict of token inputs in, dict of outputs out."""
    inputs = {
        "token_ids": keras.Input((None,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input((None,), dtype="int32", name="padding_mask"),
    }
    sequence = keras.layers.Embedding(20, 3, name="embedding")(inputs["token_ids"])
    available = {
        "sequence_output": sequence,
        "pooled_output": keras.layers.Dense(2, name="pooler")(sequence[:, 0]),
    }
    return keras.Model(inputs, {name: available[name] for name in outputs}, name="text")


def tokens():
    ids = np.array([[1, 2, 3, 0], [4, 5, 0, 0]], "int32")
    return {"token_ids": ids, "padding_mask": (ids > 0).astype("int32")}


def numpy_of(model, x):
    return keras.ops.convert_to_numpy(model.predict(x, verbose=0))


def test_text_backbones_average_their_tokens_over_the_padding_mask():
    backbone = text_backbone()
    x = tokens()
    features = numpy_of(encoder_features(backbone), x)
    sequence = keras.ops.convert_to_numpy(backbone.predict(x, verbose=0)["sequence_output"])
    mask = x["padding_mask"][:, :, None]
    np.testing.assert_allclose(features, (sequence * mask).sum(1) / mask.sum(1), rtol=1e-6)


def test_a_dict_with_only_a_pooled_output_gives_it():
    backbone = text_backbone(outputs=("pooled_output",))
    x = tokens()
    expected = keras.ops.convert_to_numpy(backbone.predict(x, verbose=0)["pooled_output"])
    np.testing.assert_allclose(numpy_of(encoder_features(backbone), x), expected, rtol=1e-6)


def test_feature_maps_and_sequences_are_averaged_vectors_kept():
    x = np.random.default_rng(0).normal(size=(3, 4, 5, 2)).astype("float32")
    identity = keras.Sequential([keras.Input((4, 5, 2)), keras.layers.Identity()])
    np.testing.assert_allclose(
        numpy_of(encoder_features(identity), x), x.mean(axis=(1, 2)), rtol=1e-6
    )
    sequence = keras.Sequential([keras.Input((5, 2)), keras.layers.Identity()])
    np.testing.assert_allclose(
        numpy_of(encoder_features(sequence), x[:, 0]), x[:, 0].mean(axis=1), rtol=1e-6
    )
    flat = keras.Sequential([keras.Input((2,)), keras.layers.Identity()])
    np.testing.assert_allclose(numpy_of(encoder_features(flat), x[:, 0, 0]), x[:, 0, 0])


def test_the_encoder_is_nested_as_one_layer_with_a_bool_padding_mask_input():
    backbone = text_backbone()
    features = encoder_features(backbone)
    assert backbone in features.layers
    # What KerasHub preprocessors give (the int32 masks above go in as well).
    assert features.input["padding_mask"].dtype == "bool"
    assert features.input["token_ids"].dtype == "int32"


def test_encoders_without_one_feature_vector_are_refused_with_the_fix():
    inputs = keras.Input((4,))
    no_pool = keras.Model(inputs, {"sequence_output": keras.layers.Dense(2)(inputs)})
    with pytest.raises(ValueError, match="without a pooled output.*'padding_mask'"):
        encoder_features(no_pool)
    two = keras.Model(inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(3)(inputs)])
    with pytest.raises(ValueError, match="2 outputs"):
        encoder_features(two)
    with pytest.raises(TypeError, match="Keras model"):
        encoder_features(lambda t: t)
