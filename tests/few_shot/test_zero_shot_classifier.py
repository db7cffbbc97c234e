import keras
import numpy as np
import pytest

import keras_transfer as kt

VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "great", "bad", "awful", "a"]


def text_encoder():
    """A KerasHub-like text backbone (dict of token inputs, dict of outputs), with
    hand-set embeddings: 'good'/'great' point one way, 'bad'/'awful' the other."""
    inputs = {
        name: keras.Input((None,), dtype="int32", name=name)
        for name in ("token_ids", "padding_mask", "segment_ids")
    }
    embedding = keras.layers.Embedding(len(VOCABULARY), 3, name="embedding")
    tokens = keras.layers.Add()(
        [
            embedding(inputs["token_ids"]),
            keras.layers.Embedding(2, 3, name="segments")(inputs["segment_ids"]),
        ]
    )
    encoder = keras.Model(inputs, {"sequence_output": tokens}, name="text")
    table = np.zeros((len(VOCABULARY), 3), "float32")
    table[:, 2] = 0.1
    table[[5, 6], 0] = [1.0, 2.0]
    table[[7, 8], 1] = [1.0, 2.0]
    embedding.set_weights([table])
    return encoder


def preprocessor():
    import keras_hub

    tokenizer = keras_hub.models.BertTokenizer(vocabulary=VOCABULARY)
    return keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=6)


DESCRIPTIONS = {"positive": ["good", "a great"], "negative": "bad"}
TEXTS = ["a good good", "awful", "great", "bad bad a"]


def embed(encoder, prep, texts):
    inputs = keras.tree.map_structure(np.asarray, prep(texts))
    tokens = keras.ops.convert_to_numpy(encoder.predict(inputs, verbose=0)["sequence_output"])
    mask = inputs["padding_mask"][:, :, None].astype("float32")
    vectors = (tokens * mask).sum(axis=1) / mask.sum(axis=1)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_probabilities_are_the_softmax_of_cosines_to_the_averaged_descriptions():
    encoder, prep = text_encoder(), preprocessor()
    classifier = kt.ZeroShotClassifier(encoder, DESCRIPTIONS, prep, scale=5.0)
    positive = embed(encoder, prep, ["good", "a great"]).mean(axis=0)
    negative = embed(encoder, prep, ["bad"])[0]
    classes = np.stack([positive, negative])
    classes /= np.linalg.norm(classes, axis=1, keepdims=True)
    logits = 5.0 * embed(encoder, prep, TEXTS) @ classes.T
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(classifier.predict(TEXTS), expected, rtol=1e-4, atol=1e-6)
    assert classifier.predict_labels(TEXTS) == ["positive", "negative", "positive", "negative"]


def test_a_list_of_descriptions_names_the_classes_and_the_model_saves(tmp_path):
    classifier = kt.ZeroShotClassifier(text_encoder(), ["great", "awful"], preprocessor())
    assert classifier.class_names == ["great", "awful"]
    assert classifier.predict_labels(["a good", "bad"]) == ["great", "awful"]
    path = str(tmp_path / "zero_shot.keras")
    classifier.model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    inputs = keras.tree.map_structure(np.asarray, preprocessor()(TEXTS))
    np.testing.assert_allclose(
        loaded.predict(inputs, verbose=0), classifier.predict(TEXTS), rtol=1e-5, atol=1e-6
    )


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="exported here on TensorFlow only (fast)"
)
def test_exports_a_saved_model_that_takes_strings_and_returns_labels(tmp_path):
    import tensorflow as tf

    classifier = kt.ZeroShotClassifier(text_encoder(), DESCRIPTIONS, preprocessor())
    served = tf.saved_model.load(classifier.export(str(tmp_path / "served")))
    result = served.serving_default(text=tf.constant(TEXTS))
    assert [label.decode() for label in result["label"].numpy()] == classifier.predict_labels(TEXTS)
    np.testing.assert_allclose(
        result["probabilities"].numpy(), classifier.predict(TEXTS), rtol=1e-5, atol=1e-6
    )


def test_bad_descriptions_and_texts_say_what_to_do():
    encoder, prep = text_encoder(), preprocessor()
    with pytest.raises(ValueError, match="describes 0 class"):
        kt.ZeroShotClassifier(encoder, [], prep)
    with pytest.raises(ValueError, match="describes 1 class"):
        kt.ZeroShotClassifier(encoder, {"only": "good"}, prep)
    with pytest.raises(ValueError, match="'negative' has no description"):
        kt.ZeroShotClassifier(encoder, {"positive": "good", "negative": []}, prep)
    with pytest.raises(TypeError, match="non-empty strings"):
        kt.ZeroShotClassifier(encoder, {"positive": "good", "negative": ["bad", 3]}, prep)
    with pytest.raises(TypeError, match="dict from class names"):
        kt.ZeroShotClassifier(encoder, "good bad", prep)
    with pytest.raises(TypeError, match="`preprocessor`"):
        kt.ZeroShotClassifier(encoder, DESCRIPTIONS, "bert")
    inputs = keras.Input((3,))
    no_pool = keras.Model(inputs, {"sequence_output": keras.layers.Dense(2)(inputs)})
    with pytest.raises(ValueError, match="without a pooled output"):
        kt.ZeroShotClassifier(no_pool, DESCRIPTIONS, prep)
    classifier = kt.ZeroShotClassifier(encoder, DESCRIPTIONS, prep)
    with pytest.raises(TypeError, match=r"list of strings \(for one text"):
        classifier.predict("good")
    with pytest.raises(ValueError, match="non-empty list"):
        classifier.predict([])
