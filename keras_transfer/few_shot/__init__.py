"""Few-shot and zero-shot learning: classifiers from a handful of labelled
examples per class or from class descriptions alone, and the episodes to
evaluate them honestly."""

from keras_transfer.few_shot.few_shot_episodes import (
    FewShotEpisode,
    FewShotEpisodes,
    few_shot_episodes,
)
from keras_transfer.few_shot.prototype_classifier import prototype_classifier
from keras_transfer.few_shot.prototype_head import PrototypeHead
from keras_transfer.few_shot.zero_shot_classifier import ZeroShotClassifier

__all__ = [
    "FewShotEpisode",
    "FewShotEpisodes",
    "PrototypeHead",
    "ZeroShotClassifier",
    "few_shot_episodes",
    "prototype_classifier",
]
