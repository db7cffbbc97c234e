from keras_transfer.backbones.load_backbone import load_backbone, load_preprocessor

__all__ = ["load_backbone", "load_preprocessor"]
