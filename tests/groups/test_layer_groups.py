import keras
import keras_hub
import pytest
from testing_utils import dense_model, tiny_bert, tiny_keras_cv_resnet, two_block_model

import keras_transfer as kt


def group_names(model, groups=None):
    return [group.name for group in kt.layer_groups(model, groups)]


def test_functional_model_has_one_group_per_weighted_layer():
    assert group_names(dense_model()) == ["a", "b", "head"]


def test_batchnorm_joins_the_layer_it_normalises():
    groups = kt.layer_groups(dense_model(with_batchnorm=True))
    assert [group.name for group in groups] == ["a", "b", "head"]
    assert [layer.name for layer in groups[0].layers] == ["a", "bn"]
    assert groups[0].num_params == 6 * 8 + 8 + 4 * 8


def test_nested_backbone_is_expanded_and_head_comes_last():
    backbone = dense_model(name="backbone")
    classifier = keras.Sequential(
        [keras.Input((6,)), backbone, keras.layers.Dense(3, name="classifier_head")]
    )
    assert group_names(classifier) == ["a", "b", "head", "classifier_head"]


def test_kerashub_backbone_groups_embeddings_transformer_layers_and_pooler():
    backbone = tiny_bert(num_layers=3)
    groups = kt.layer_groups(backbone)
    assert [group.name for group in groups] == [
        "token_embedding",
        "transformer_layer_0",
        "transformer_layer_1",
        "transformer_layer_2",
        "pooled_dense",
    ]
    embedding_layers = [layer.name for layer in groups[0].layers]
    assert "embeddings_layer_norm" in embedding_layers
    # Every weight of the backbone is in exactly one group.
    grouped = [id(v) for group in groups for v in group.variables]
    assert sorted(grouped) == sorted(id(v) for v in backbone.weights)


def test_kerashub_classifier_puts_its_head_after_the_backbone():
    backbone = tiny_bert()
    classifier = keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=2, preprocessor=None
    )
    names = group_names(classifier)
    assert names[:3] == ["token_embedding", "transformer_layer_0", "transformer_layer_1"]
    assert names[-1] == "logits"


def test_keras_applications_backbone_is_grouped_by_block():
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None
    )
    names = group_names(backbone)
    assert names[0] == "Conv1"  # the stem
    assert names[1] == "expanded_conv"
    assert names[2:18] == [f"block_{i}" for i in range(1, 17)]
    assert names[-1] == "Conv_1"  # the top
    assert len(names) == 19


def test_kerascv_backbone_is_grouped_by_stack():
    backbone = tiny_keras_cv_resnet()
    assert group_names(backbone) == ["conv1_conv", "stack_0", "stack_1"]


def test_explicit_regex_groups():
    groups = kt.layer_groups(dense_model(with_batchnorm=True), groups=["^a$|bn", "b|head"])
    assert [[layer.name for layer in group.layers] for group in groups] == [
        ["a", "bn"],
        ["b", "head"],
    ]


def test_regex_that_matches_nothing_lists_the_layers():
    with pytest.raises(
        ValueError, match=r"'nope' matches none of the layers.*\['a', 'b', 'head'\]"
    ):
        kt.layer_groups(dense_model(), groups=["nope", ".*"])


def test_layer_outside_every_pattern_is_an_error():
    with pytest.raises(ValueError, match=r"\['head'\] match none.*catch-all"):
        kt.layer_groups(dense_model(), groups=["^a$", "^b$"])


def test_invalid_regex_is_reported():
    with pytest.raises(ValueError, match="Invalid group pattern"):
        kt.layer_groups(dense_model(), groups=["(", ".*"])


def test_unbuilt_model_is_refused_with_a_fix():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="not built"):
        kt.layer_groups(model)


def test_model_without_trainable_weights_is_refused():
    model = keras.Sequential([keras.Input((3,)), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="no layers with trainable weights"):
        kt.layer_groups(model)


def test_non_model_is_refused():
    with pytest.raises(TypeError, match="Keras model"):
        kt.layer_groups("resnet")


def test_describe_groups_table_counts_params_and_trainable_params():
    model = dense_model(with_batchnorm=True)
    model.get_layer("b").trainable = False
    lines = kt.describe_groups(model, print_fn=None).splitlines()
    assert lines[0].split() == ["#", "group", "layers", "params", "trainable"]
    rows = [line.split() for line in lines[2:]]
    # bn: 32 params of which gamma and beta (16) are trainable.
    assert rows[0] == ["0", "a", "a,", "bn", "88", "72"]
    assert rows[1] == ["1", "b", "b", "72", "0"]
    assert rows[2] == ["2", "head", "head", "9", "9"]


def test_group_frozen_by_the_user_is_still_grouped():
    model = dense_model()
    model.get_layer("a").trainable = False
    groups = kt.layer_groups(model)
    assert groups[0].name == "a"
    assert len(groups[0].trainable_capable_variables) == 2


def test_layer_that_names_variable_groups_is_split_into_them():
    model = two_block_model()
    groups = kt.layer_groups(model)
    assert [group.name for group in groups] == ["block_0", "block_1", "head"]
    encoder = model.get_layer("encoder")
    assert groups[0].variables == [encoder.first]
    assert not groups[0].owns_whole_layers
