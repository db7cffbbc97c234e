"""Multi-task transfer: one backbone, a head per task, batches from every task."""

from keras_transfer.multitask.multi_task_model import MultiTaskModel
from keras_transfer.multitask.task_batches import task_batches

__all__ = ["MultiTaskModel", "task_batches"]
