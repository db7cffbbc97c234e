from keras_transfer.backbones.hub_layer import HubLayer
from keras_transfer.backbones.load_backbone import load_backbone, load_preprocessor

__all__ = ["HubLayer", "load_backbone", "load_preprocessor"]
