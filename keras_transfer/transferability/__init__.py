"""Transferability scores: rank pretrained backbones for a task from frozen
features, before fine-tuning any of them.

Each score takes numpy arrays (features or source predictions, and integer
labels) and returns one float; higher means expected to transfer better.
Compare scores of candidates on the same data only. `kt.rank_backbones` runs
candidate backbones over the data and ranks them by one of these scores.
"""

from keras_transfer.transferability.backbone_ranking import BackboneRanking, RankedBackbone
from keras_transfer.transferability.h_score import h_score
from keras_transfer.transferability.leep import leep
from keras_transfer.transferability.logme import logme
from keras_transfer.transferability.nce import nce
from keras_transfer.transferability.rank_backbones import rank_backbones

__all__ = [
    "BackboneRanking",
    "RankedBackbone",
    "h_score",
    "leep",
    "logme",
    "nce",
    "rank_backbones",
]
