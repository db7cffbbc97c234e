"""The learning-rate range test."""

from keras_transfer.lr_finder.lr_find import LRFinderResult, lr_find

__all__ = ["LRFinderResult", "lr_find"]
