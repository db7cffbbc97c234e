"""keras_transfer: transfer learning in a few `compile` / `fit` calls, on every
Keras backend."""

from keras_transfer.cache import cache_dir
from keras_transfer.freezing import FreezeSchedule, freeze, unfreeze
from keras_transfer.groups import LayerGroup, describe_groups, layer_groups
from keras_transfer.optimizers import DiscriminativeLR
from keras_transfer.version import __version__

__all__ = [
    "DiscriminativeLR",
    "FreezeSchedule",
    "LayerGroup",
    "__version__",
    "cache_dir",
    "describe_groups",
    "freeze",
    "layer_groups",
    "unfreeze",
]
