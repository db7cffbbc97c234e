"""Learning-rate schedules for fine-tuning: 1cycle and ULMFiT's slanted triangle."""

from keras_transfer.schedules.one_cycle import OneCycle
from keras_transfer.schedules.slanted_triangular import SlantedTriangular

__all__ = ["OneCycle", "SlantedTriangular"]
