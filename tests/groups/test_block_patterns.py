import pytest

from keras_transfer.groups.block_patterns import block_of


@pytest.mark.parametrize(
    "name, block",
    [
        ("conv3_block2_1_conv", "conv3"),
        ("block2a_expand_conv", "block2"),
        ("convnext_tiny_stage_2_block_1_depthwise_conv", "stage_2"),
        ("conv_pw_7_bn", "conv_block_7"),
        ("v2_stack_1_block2_1_conv", "stack_1"),
        ("expanded_conv_4_depthwise", "expanded_conv_4"),
        ("transformer_layer_3", "transformer_layer_3"),
        ("layer_3", "layer_3"),
        ("head", None),
        ("dense_layer_3", None),
    ],
)
def test_block_of_known_architectures(name, block):
    assert block_of(name) == block
