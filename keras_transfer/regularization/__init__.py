"""Regularisers toward the starting point: `L2SP`, `EWC`, `fisher_information`."""

from keras_transfer.regularization.ewc import EWC
from keras_transfer.regularization.fisher_information import fisher_information
from keras_transfer.regularization.l2sp import L2SP

__all__ = ["EWC", "L2SP", "fisher_information"]
