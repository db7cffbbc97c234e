from keras_transfer.freezing.freeze import freeze, unfreeze
from keras_transfer.freezing.freeze_schedule import FreezeSchedule

__all__ = ["FreezeSchedule", "freeze", "unfreeze"]
