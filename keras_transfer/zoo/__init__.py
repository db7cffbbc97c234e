"""Real pretrained weights that install offline from package registries."""

from keras_transfer.zoo.efficientnet_lite0 import (
    efficientnet_lite0_imagenet,
    load_efficientnet_lite0_imagenet,
)
from keras_transfer.zoo.minilm_l6 import minilm_l6

__all__ = ["efficientnet_lite0_imagenet", "load_efficientnet_lite0_imagenet", "minilm_l6"]
