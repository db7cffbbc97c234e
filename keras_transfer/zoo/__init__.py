"""Real pretrained weights that install offline from package registries."""

from keras_transfer.zoo.minilm_l6 import minilm_l6

__all__ = ["minilm_l6"]
