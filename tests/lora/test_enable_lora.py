import keras
import numpy as np
import pytest
from lora.lora_testing import (
    bert_classifier,
    changed_paths,
    factor_paths,
    lora_dense_model,
    perturb_factors,
    snapshot,
)
from testing_utils import dense_model, regression_data, values

import keras_transfer as kt
from keras_transfer._keras_internals.layers import flatten_layers


def lora_names(model):
    return [layer.name for layer in flatten_layers(model) if getattr(layer, "lora_enabled", False)]


def test_lora_goes_into_every_group_but_the_head_and_only_it_trains():
    model = dense_model()
    summary = kt.enable_lora(model, rank=2)
    assert lora_names(model) == ["a", "b"]
    assert [v.path for v in model.trainable_weights] == [
        "a/lora_kernel_a",
        "a/lora_kernel_b",
        "b/lora_kernel_a",
        "b/lora_kernel_b",
        "head/kernel",
        "head/bias",
    ]
    # a: 6x2 + 2x8, b: 8x2 + 2x8; the model had 56 + 72 + 9 weights.
    assert summary.lora_params == 28 + 32
    assert summary.total_params == 137 + 60
    assert summary.trainable_params == 60 + 9
    assert summary.share == pytest.approx(60 / 197)
    assert summary.groups == ("a", "b") and summary.head == "head"
    assert [row[0] for row in summary.layers] == ["a", "b"]
    text = str(summary)
    assert "LoRA rank 2 (alpha 2) on 2 layers in 2 groups: a, b" in text
    assert "60 (30.46% of 197)" in text
    assert "LoraSummary(rank=2, layers=2, lora_params=60" in repr(summary)


def test_the_forward_pass_is_keras_lora_with_the_given_alpha():
    model = lora_dense_model(rank=2, alpha=6)
    layer = model.get_layer("a")
    kernel, bias, factor_a, factor_b = values(
        [layer.weights[0], layer.bias, layer.lora_kernel_a, layer.lora_kernel_b]
    )
    x, _ = regression_data(4)
    expected = np.maximum(x @ (kernel + 3.0 * factor_a @ factor_b) + bias, 0)
    probe = keras.Model(model.input, layer.output)
    np.testing.assert_allclose(probe.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_an_sgd_step_moves_the_factors_and_the_head_only():
    model = lora_dense_model()
    before = snapshot(model)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.train_on_batch(*regression_data())
    expected = factor_paths(model) + ["head/bias", "head/kernel"]
    assert changed_paths(before, model) == sorted(expected)


@pytest.mark.parametrize(
    "groups, expected",
    [
        (0, ["a"]),
        (-2, ["b"]),
        ("b", ["b"]),
        ("[ab]", ["a", "b"]),
        ([0, "head"], ["a", "head"]),
    ],
)
def test_groups_by_index_name_or_regex(groups, expected):
    model = dense_model()
    summary = kt.enable_lora(model, rank=2, groups=groups)
    assert lora_names(model) == expected
    assert list(summary.groups) == expected


def test_groups_left_out_are_frozen_whole():
    model = dense_model()
    kt.enable_lora(model, rank=2, groups="b")
    assert [v.path for v in model.trainable_weights] == [
        "b/lora_kernel_a",
        "b/lora_kernel_b",
        "head/kernel",
        "head/bias",
    ]


def test_a_lora_head_trains_its_factors_only():
    model = dense_model()
    kt.enable_lora(model, rank=2, groups=[-1])
    assert [v.path for v in model.trainable_weights] == ["head/lora_kernel_a", "head/lora_kernel_b"]


def test_keras_hub_attention_layers_by_layer_regex():
    model = bert_classifier()
    summary = kt.enable_lora(model, rank=2, layers="query|value")
    paths = [
        f"transformer_layer_{i}/self_attention_layer/{name}"
        for i in range(2)
        for name in ("query", "value")
    ]
    assert [row[0] for row in summary.layers] == paths
    assert summary.groups == ("transformer_layer_0", "transformer_layer_1")
    assert summary.head == "logits"
    assert [v.path for v in model.trainable_weights] == [
        f"{path}/lora_kernel_{factor}" for path in paths for factor in "ab"
    ] + ["logits/kernel", "logits/bias"]


def test_keras_hub_default_covers_embeddings_and_skips_what_has_no_lora():
    model = bert_classifier()
    summary = kt.enable_lora(model, rank=2)
    kinds = {row[1] for row in summary.layers}
    assert kinds == {"ReversibleEmbedding", "Embedding", "EinsumDense", "Dense"}
    assert summary.skipped == {"PositionEmbedding": 1, "LayerNormalization": 5}
    assert "5 LayerNormalization" in str(summary)
    frozen_norm = model.get_layer("bert_backbone").get_layer("embeddings_layer_norm")
    assert not frozen_norm.trainable_weights


def test_sequential_with_a_nested_functional_backbone():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, name="inner_a")(inputs)
    backbone = keras.Model(inputs, keras.layers.Dense(8, name="inner_b")(hidden), name="backbone")
    model = keras.Sequential([keras.Input((6,)), backbone, keras.layers.Dense(1, name="head")])
    summary = kt.enable_lora(model, rank=2)
    assert [row[0] for row in summary.layers] == ["inner_a", "inner_b"]
    assert backbone.get_layer("inner_a").lora_enabled
    assert not model.get_layer("head").lora_enabled
    assert model.get_layer("head").kernel.trainable


def test_applications_convnet_gets_lora_in_its_convolutions_only():
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=3
    )
    summary = kt.enable_lora(model, rank=2, groups="block_1")
    assert [row[:2] for row in summary.layers] == [
        ("block_1_expand", "Conv2D"),
        ("block_1_project", "Conv2D"),
    ]
    assert summary.skipped == {"BatchNormalization": 3, "DepthwiseConv2D": 1}
    assert "1 DepthwiseConv2D" in str(summary)
    lora_weights = [v.path for v in model.trainable_weights if "lora" in v.path]
    assert lora_weights == [
        f"block_1_{name}/lora_kernel_{factor}" for name in ("expand", "project") for factor in "ab"
    ]


def small_convnet():
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    hidden = keras.layers.DepthwiseConv2D(3, name="block1_depthwise")(hidden)
    hidden = keras.layers.BatchNormalization(name="block1_bn")(hidden)
    hidden = keras.layers.Conv2D(4, 1, name="block1_project")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden))


def test_an_sgd_step_trains_convolution_factors_not_depthwise_or_base_kernels():
    model = small_convnet()
    summary = kt.enable_lora(model, rank=2)
    assert summary.skipped == {"DepthwiseConv2D": 1, "BatchNormalization": 1}
    perturb_factors(model)
    images = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    before = snapshot(model)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.train_on_batch(images, np.ones((4, 2), "float32"))
    expected = factor_paths(model) + ["head/kernel", "head/bias"]
    assert changed_paths(before, model) == sorted(expected)


@pytest.mark.parametrize("rank", [0, -1, 1.5, True, "8", None])
def test_rank_must_be_a_positive_integer(rank):
    with pytest.raises(ValueError, match="`rank` must be an integer >= 1"):
        kt.enable_lora(dense_model(), rank=rank)


@pytest.mark.parametrize("alpha", [0, -2.0, float("nan"), "big"])
def test_alpha_must_be_a_positive_number(alpha):
    with pytest.raises(ValueError, match="`alpha` must be a finite number > 0"):
        kt.enable_lora(dense_model(), alpha=alpha)


def test_an_unknown_group_lists_the_groups():
    listing = r"\(0: a, 1: b, 2: head\)"
    with pytest.raises(ValueError, match=r"'c' names none of the layer groups " + listing):
        kt.enable_lora(dense_model(), groups="c")
    with pytest.raises(ValueError, match=r"Group index 3 is out of range.*0: a, 1: b, 2: head"):
        kt.enable_lora(dense_model(), groups=3)
    with pytest.raises(TypeError, match="group index, a group name or a regex"):
        kt.enable_lora(dense_model(), groups=[1.0])


def test_a_group_without_lora_capable_layers_says_what_it_holds():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, name="a")(inputs)
    hidden = keras.layers.LayerNormalization(name="norm")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(hidden))
    with pytest.raises(ValueError, match=r"No LoRA-capable(.|\n)*1: norm: LayerNormalization"):
        kt.enable_lora(model, groups="norm")


def test_a_layer_regex_matching_nothing_lists_the_layer_paths():
    match = r"layers='query'(.|\n)*0: a: Dense 'a'(.|\n)*1: b: Dense 'b'"
    with pytest.raises(ValueError, match=match):
        kt.enable_lora(dense_model(), layers="query")


def test_lora_enabled_twice_is_an_error_pointing_at_merge():
    model = dense_model()
    kt.enable_lora(model, rank=2)
    with pytest.raises(ValueError, match="already enabled on 2 layer.*first: 'a'.*kt.merge_lora"):
        kt.enable_lora(model, rank=4)


def test_a_single_group_model_needs_groups_given():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="single layer group.*groups=\\[0\\]"):
        kt.enable_lora(model)
    kt.enable_lora(model, rank=1, groups=[0])
    assert model.layers[0].lora_enabled


def test_an_unbuilt_model_is_refused():
    model = keras.Sequential([keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="not built"):
        kt.enable_lora(model)


def test_a_model_that_predicted_before_predicts_with_lora_after():
    model = dense_model()
    x, _ = regression_data(4)
    model.predict(x, verbose=0)  # Traces the predict function without LoRA.
    kt.enable_lora(model, rank=2, groups="a")
    perturb_factors(model)
    reference = keras.Model(model.input, model.output)  # Never traced.
    np.testing.assert_allclose(
        model.predict(x, verbose=0), reference.predict(x, verbose=0), rtol=1e-6
    )
