"""Blocks of a SavedModel from its variables' names (no TensorFlow needed)."""

import pytest

from keras_transfer.backbones.hub_grouping import block_key, groups_from_names, groups_from_patterns
from keras_transfer.groups.block_patterns import block_of


class _Variable:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


def named_variables(names):
    return [(name, _Variable(name)) for name in names]


def group_names(names, untrainable=()):
    named = named_variables(names)
    trainable = {id(v) for name, v in named if name not in untrainable}
    return [
        (group, [v.name for v in variables])
        for group, variables in groups_from_names(named, trainable)
    ]


@pytest.mark.parametrize(
    "saved_name, block",
    [
        ("encoder/layer_3/attention/kernel", "encoder/layer_3"),
        ("transformer_layer_0/kernel", "transformer_layer_0"),
        ("encoder_layer_2/dense/kernel", "encoder_layer_2"),
        ("net/block2a_expand/kernel", "net/block2"),
        ("blocks_0/conv/kernel", "blocks_0"),
        ("resnet/stage2_unit1/kernel", "resnet/stage2"),
        ("resnet/conv3_block2_1_conv/kernel", "resnet/conv3"),
        # Components the table learnt from layer names serve scopes too.
        ("MobilenetV3/expanded_conv_4/expand/weights", "MobilenetV3/expanded_conv_4"),
        ("mobilenet/conv_dw_3/depthwise_kernel", "mobilenet/conv_block_3"),
        # The leaf is the variable's own name, never a block.
        ("layer_3", None),
        ("pooler/dense/kernel", None),
        ("encoder/layer_norm/gamma", None),
    ],
)
def test_block_key_is_the_name_up_to_the_first_block(saved_name, block):
    assert block_key(saved_name) == block


def test_scopes_and_layer_names_read_one_table():
    for component in ("layer_3", "block_2", "stage_1", "conv3_block2_1_conv", "expanded_conv_4"):
        assert block_key(f"model/{component}/kernel") == f"model/{block_of(component)}"


@pytest.mark.parametrize(
    "names, groups",
    [
        (
            ["embeddings/kernel", "transformer_layer_0/kernel", "transformer_layer_1/kernel"]
            + ["pooler/dense/kernel"],
            [
                ("embeddings", ["embeddings/kernel"]),
                ("transformer_layer_0", ["transformer_layer_0/kernel"]),
                ("transformer_layer_1", ["transformer_layer_1/kernel"]),
                ("pooler/dense", ["pooler/dense/kernel"]),
            ],
        ),
        # A run outside blocks is named by its common scope, or its first variable.
        (
            ["stem/a/kernel", "stem/b/kernel", "block_1/kernel", "x/kernel", "y/kernel"],
            [
                ("stem", ["stem/a/kernel", "stem/b/kernel"]),
                ("block_1", ["block_1/kernel"]),
                ("x/kernel", ["x/kernel", "y/kernel"]),
            ],
        ),
        # Order of first appearance; a block read again later stays one group.
        (
            ["encoder/layer_9/kernel", "encoder/layer_10/kernel", "encoder/layer_9/bias"],
            [
                ("encoder/layer_9", ["encoder/layer_9/kernel", "encoder/layer_9/bias"]),
                ("encoder/layer_10", ["encoder/layer_10/kernel"]),
            ],
        ),
        (["dense/kernel", "dense/bias"], []),
    ],
)
def test_groups_from_names(names, groups):
    assert group_names(names) == groups


def test_groups_with_nothing_to_train_join_a_neighbour():
    names = ["stats/moving_mean", "block_0/kernel", "block_1/kernel", "top/moving_var"]
    assert group_names(names, untrainable={"stats/moving_mean", "top/moving_var"}) == [
        ("block_0", ["stats/moving_mean", "block_0/kernel"]),
        ("block_1", ["block_1/kernel", "top/moving_var"]),
    ]


def test_groups_from_patterns_name_the_layer_when_a_pattern_fits_nothing():
    named = named_variables(["encoder/layer_0/kernel", "encoder/layer_1/kernel"])
    groups = groups_from_patterns(named, ["layer_0/", "layer_1/"], "hub")
    assert [(name, [v.name for v in variables]) for name, variables in groups] == [
        ("layer_0/", ["encoder/layer_0/kernel"]),
        ("layer_1/", ["encoder/layer_1/kernel"]),
    ]
    with pytest.raises(ValueError, match="'layer_7/' matches none of the SavedModel.*'hub'"):
        groups_from_patterns(named, ["layer_", "layer_7/"], "hub")
