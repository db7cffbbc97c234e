import json
import os

import keras
import numpy as np
import pytest
from testing_utils import tiny_bert, values

from keras_transfer.finetune import LabelledData, finetune
from keras_transfer.finetune.classifier import groups_that_train

EXPORTS = keras.backend.backend() in ("tensorflow", "jax")
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "great", "bad", "awful", "film"]


def tiny_cnn():
    images = keras.Input((None, None, 3))
    hidden = keras.layers.Conv2D(4, 3, activation="relu", name="block1_conv")(images)
    hidden = keras.layers.Conv2D(4, 3, activation="relu", name="block2_conv")(hidden)
    return keras.Model(images, hidden, name="tiny_cnn")


def bright_and_dark(count=40, size=12):
    """Class 1 images are bright, class 0 dark: learnable in a few steps."""
    rng = np.random.default_rng(0)
    labels = np.arange(count) % 2
    base = np.where(labels[:, None, None, None] == 1, 170, 60)
    pixels = base + rng.integers(-40, 40, (count, size, size, 3))
    return LabelledData(pixels.astype("uint8"), labels.astype("int32"), ["dark", "bright"], "image")


def test_image_finetune_trains_head_then_unfreezes_and_exports(tmp_path):
    import keras_hub

    backbone = tiny_cnn()
    before = values(backbone.weights)
    export_dir = str(tmp_path / "run") if EXPORTS else None
    data = bright_and_dark()
    converter = keras_hub.layers.ImageConverter(image_size=(8, 8), scale=1 / 255)
    result = finetune(
        backbone,
        data,
        converter,
        head_epochs=5,
        epochs=2,
        batch_size=8,
        verbose=0,
        export_dir=export_dir,
        head_learning_rate=0.2,
        learning_rate=1e-2,
    )
    assert result.stages == [(5, 2), (6, "all")]
    assert len(result.history["val_accuracy"]) == 7
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert result.accuracy >= 0.75
    changed = [not np.array_equal(a, b) for a, b in zip(before, values(backbone.weights))]
    assert all(changed), "every backbone variable trains in the last stage"
    if not EXPORTS:
        return
    with open(os.path.join(export_dir, "metrics.json")) as handle:
        metrics = json.load(handle)
    assert metrics["validation_accuracy_fine_tuned"] == result.accuracy
    assert metrics["stages"] == [
        {"epoch": 5, "trainable_groups": 2},
        {"epoch": 6, "trainable_groups": "all"},
    ]
    with open(os.path.join(export_dir, "training_curves.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    _check_served_images(export_dir, result, data.inputs[:5])


def _check_served_images(export_dir, result, raw_images):
    import tensorflow as tf

    served = tf.saved_model.load(os.path.join(export_dir, "saved_model"))
    outputs = served.serving_default(images=tf.constant(raw_images))
    logits = keras.ops.convert_to_numpy(result.model.predict(result.prepare(raw_images), verbose=0))
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    names = [name.decode() for name in outputs["label"].numpy()]
    assert names == [result.class_names[i] for i in expected.argmax(-1)]


def tiny_text_preprocessor(sequence_length=8):
    import keras_hub

    tokenizer = keras_hub.models.BertTokenizer(vocabulary=WORDS)
    return keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=sequence_length
    )


def test_text_finetune_tokenises_and_merges_the_unused_pooler_into_the_head(tmp_path):
    texts = np.array(["good film", "great", "bad film", "awful", "great film", "bad"] * 4, object)
    labels = np.array([1, 1, 0, 0, 1, 0] * 4, "int32")
    data = LabelledData(texts, labels, ["negative", "positive"], "text")
    result = finetune(
        tiny_bert(vocabulary_size=len(WORDS)),
        data,
        tiny_text_preprocessor(),
        sequence_length=8,
        head_epochs=1,
        epochs=2,
        batch_size=8,
        verbose=0,
    )
    names = [group.name for group in groups_that_train(result.model)]
    assert names == ["token_embedding", "transformer_layer_0", "transformer_layer_1", "head"]
    head_group = groups_that_train(result.model)[-1]
    assert {layer.name for layer in head_group.layers} >= {"pooled_dense", "head"}
    assert result.stages == [(1, 2), (2, "all")]
    tokens = result.prepare(np.array(["good film"], object))
    assert sorted(tokens) == ["padding_mask", "segment_ids", "token_ids"]
    assert tokens["token_ids"].shape == (1, 8)


def test_text_without_a_tokenizer_is_refused():
    data = LabelledData(np.array(["a", "b"], object), np.array([0, 1]), ["x", "y"], "text")
    with pytest.raises(ValueError, match="pass `preprocessor=`"):
        finetune(tiny_bert(), data)


def test_bad_epochs_are_refused():
    with pytest.raises(ValueError, match="`epochs` must be a positive integer"):
        finetune(tiny_cnn(), bright_and_dark(), epochs=0)


def test_the_data_and_result_types_are_reachable_from_kt_and_from_kt_finetune(tmp_path):
    import keras_transfer as kt
    from keras_transfer.finetune.data import LabelledData
    from keras_transfer.finetune.finetune import FinetuneResult

    # `kt.finetune` is the function (it hides the sub-package); its docstring
    # names `kt.finetune.LabelledData`, which must be the one class.
    assert callable(kt.finetune) and kt.finetune.__name__ == "finetune"
    assert kt.finetune.LabelledData is kt.LabelledData is LabelledData
    assert kt.finetune.load_labelled_data is kt.load_labelled_data
    assert kt.finetune.FinetuneResult is kt.FinetuneResult
    assert kt.FinetuneResult is FinetuneResult
    assert {"LabelledData", "load_labelled_data", "FinetuneResult"} <= set(kt.__all__)
    assert "kt.LabelledData" in kt.finetune.__doc__
    csv = tmp_path / "reviews.csv"
    csv.write_text("text,label\ngood,pos\nbad,neg\nfine,pos\n")
    data = kt.finetune.load_labelled_data(str(csv))
    assert isinstance(data, kt.finetune.LabelledData)
    assert data.class_names == ["neg", "pos"] and data.labels.tolist() == [1, 0, 1]
    built = kt.finetune.LabelledData(data.inputs, data.labels, data.class_names, "text")
    assert built == kt.LabelledData(data.inputs, data.labels, data.class_names, "text")
