"""The one table of block-name patterns of known architectures.

Layer grouping (`kt.layer_groups`, on layer names) and `kt.HubLayer` (on the
scope components of a SavedModel's variable names) both find a network's
blocks through `block_of`, so a new architecture is taught once, here.
"""

from __future__ import annotations

import re

# The first capture of the first pattern that matches a name is its block.
BLOCK_PATTERNS = (
    # KerasHub transformers: `transformer_layer_3`, `decoder_layer_0`, ...
    re.compile(r"((?:transformer|encoder|decoder)_layer_\d+)"),
    # SavedModel scopes: `encoder/layer_3/...`, `layers_0`, `layer3`.
    re.compile(r"^(layers?_?\d+)$"),
    # ConvNeXt (applications) and KerasHub CNNs: `..._stage_2_block_1_...`;
    # KerasCV ResNets: `v2_stack_1_block2_...`.
    re.compile(r"(stages?_?\d+)"),
    re.compile(r"(stacks?_?\d+)"),
    # ResNet / DenseNet (applications): `conv3_block2_1_conv` -> `conv3`.
    re.compile(r"^(conv\d+)_block"),
    # EfficientNet, VGG, Xception, MobileNetV2: `block2a_...` -> `block2`.
    re.compile(r"^(blocks?_?\d+)"),
    # MobileNetV3: `expanded_conv_4_depthwise` -> `expanded_conv_4`; as a
    # SavedModel scope (`MobilenetV3/expanded_conv_4/expand/...`), the whole
    # component `expanded_conv_4`.
    re.compile(r"^(expanded_conv(?:_\d+)?)(?:_|$)"),
    # MobileNet: `conv_dw_3`, `conv_pw_3_bn` -> `conv_block_3`.
    re.compile(r"^conv_(?:dw|pw)_(\d+)"),
)


def block_of(name: str) -> str | None:
    """The block a layer name (or one scope component) belongs to, if any.

    Example:

    >>> from keras_transfer.groups.block_patterns import block_of
    >>> block_of("conv3_block2_1_conv"), block_of("conv_pw_3_bn"), block_of("dense")
    ('conv3', 'conv_block_3', None)
    >>> block_of("expanded_conv_4")  # A SavedModel scope component.
    'expanded_conv_4'
    """
    for pattern in BLOCK_PATTERNS:
        match = pattern.search(name)
        if match:
            block = match.group(1)
            return block if not block.isdigit() else f"conv_block_{block}"
    return None
