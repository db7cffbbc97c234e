"""Knowledge distillation: a frozen teacher trains a small student."""

from keras_transfer.distillation.distillation_model import DistillationModel
from keras_transfer.distillation.knowledge_distillation_loss import KnowledgeDistillationLoss
from keras_transfer.distillation.teacher_cache import cache_teacher_outputs

__all__ = ["DistillationModel", "KnowledgeDistillationLoss", "cache_teacher_outputs"]
