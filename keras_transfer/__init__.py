"""keras_transfer: transfer learning in a few `compile` / `fit` calls, on every
Keras backend."""

from keras_transfer import datasets, schedules, transferability, zoo
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
from keras_transfer.features import FeatureCache, process_shard
from keras_transfer.few_shot import (
    PrototypeHead,
    ZeroShotClassifier,
    few_shot_episodes,
    prototype_classifier,
)
from keras_transfer.finetune import FinetuneResult, LabelledData, finetune, load_labelled_data
from keras_transfer.freezing import FreezeSchedule, freeze, unfreeze
from keras_transfer.groups import LayerGroup, LayerGroupPlan, describe_groups, layer_groups
from keras_transfer.lora import LoraSummary, enable_lora, load_adapters, merge_lora, save_adapters
from keras_transfer.lr_finder import LRFinderResult, lr_find
from keras_transfer.multitask import MultiTaskModel, task_batches
from keras_transfer.nesting import nested_layers
from keras_transfer.optimizers import DiscriminativeLR
from keras_transfer.regularization import EWC, L2SP, fisher_information
from keras_transfer.transferability import BackboneRanking, rank_backbones
from keras_transfer.version import __version__
from keras_transfer.weight_averaging import average_weights, greedy_soup, wise_ft

__all__ = [
    "BackboneRanking",
    "CoralLoss",
    "DiscriminativeLR",
    "DistillationModel",
    "DomainAdaptationModel",
    "DomainAdaptationSchedule",
    "DomainConfusionLoss",
    "EWC",
    "FeatureCache",
    "FinetuneResult",
    "FreezeSchedule",
    "GradientReversal",
    "HubLayer",
    "KnowledgeDistillationLoss",
    "L2SP",
    "LRFinderResult",
    "LabelledData",
    "LayerGroup",
    "LayerGroupPlan",
    "LoraSummary",
    "MMDLoss",
    "MultiTaskModel",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "PrototypeHead",
    "SafeBackupAndRestore",
    "ZeroShotClassifier",
    "__version__",
    "average_weights",
    "cache_dir",
    "cache_teacher_outputs",
    "datasets",
    "describe_groups",
    "domain_pairs",
    "enable_lora",
    "export_saved_model",
    "few_shot_episodes",
    "finetune",
    "fisher_information",
    "freeze",
    "greedy_soup",
    "layer_groups",
    "load_adapters",
    "load_backbone",
    "load_labelled_data",
    "load_preprocessor",
    "lr_find",
    "merge_lora",
    "nested_layers",
    "process_shard",
    "prototype_classifier",
    "rank_backbones",
    "save_adapters",
    "schedules",
    "task_batches",
    "transferability",
    "unfreeze",
    "wise_ft",
    "zoo",
]
