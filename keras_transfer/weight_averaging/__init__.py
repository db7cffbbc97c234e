"""Weight-space ensembling: WiSE-FT interpolation and model soups."""

from keras_transfer.weight_averaging.average_weights import average_weights
from keras_transfer.weight_averaging.greedy_soup import greedy_soup
from keras_transfer.weight_averaging.wise_ft import wise_ft

__all__ = ["average_weights", "greedy_soup", "wise_ft"]
