"""keras_transfer: transfer learning in a few `compile` / `fit` calls, on every
Keras backend."""

from keras_transfer import datasets, schedules, zoo
from keras_transfer.adaptation import (
    CoralLoss,
    DomainAdaptationModel,
    DomainAdaptationSchedule,
    DomainConfusionLoss,
    GradientReversal,
    MMDLoss,
    domain_pairs,
)
from keras_transfer.backbones import HubLayer, load_backbone, load_preprocessor
from keras_transfer.cache import cache_dir
from keras_transfer.callbacks import NonFiniteGuard, NonFiniteLossError, SafeBackupAndRestore
from keras_transfer.distillation import (
    DistillationModel,
    KnowledgeDistillationLoss,
    cache_teacher_outputs,
)
from keras_transfer.export import export_saved_model
from keras_transfer.features import FeatureCache
from keras_transfer.finetune import FinetuneResult, LabelledData, finetune, load_labelled_data
from keras_transfer.freezing import FreezeSchedule, freeze, unfreeze
from keras_transfer.groups import LayerGroup, LayerGroupPlan, describe_groups, layer_groups
from keras_transfer.lr_finder import LRFinderResult, lr_find
from keras_transfer.nesting import nested_layers
from keras_transfer.optimizers import DiscriminativeLR
from keras_transfer.version import __version__

__all__ = [
    "CoralLoss",
    "DiscriminativeLR",
    "DistillationModel",
    "DomainAdaptationModel",
    "DomainAdaptationSchedule",
    "DomainConfusionLoss",
    "FeatureCache",
    "FinetuneResult",
    "FreezeSchedule",
    "GradientReversal",
    "HubLayer",
    "KnowledgeDistillationLoss",
    "LRFinderResult",
    "LabelledData",
    "LayerGroup",
    "LayerGroupPlan",
    "MMDLoss",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "SafeBackupAndRestore",
    "__version__",
    "cache_dir",
    "cache_teacher_outputs",
    "datasets",
    "describe_groups",
    "domain_pairs",
    "export_saved_model",
    "finetune",
    "freeze",
    "layer_groups",
    "load_backbone",
    "load_labelled_data",
    "load_preprocessor",
    "lr_find",
    "nested_layers",
    "schedules",
    "unfreeze",
    "zoo",
]
