"""Unsupervised domain adaptation: DANN, deep domain confusion, CORAL and MMD."""

from keras_transfer.adaptation.discrepancy_losses import CoralLoss, MMDLoss
from keras_transfer.adaptation.domain_adaptation_model import (
    DomainAdaptationModel,
    default_domain_head,
)
from keras_transfer.adaptation.domain_adaptation_schedule import DomainAdaptationSchedule
from keras_transfer.adaptation.domain_confusion_loss import DomainConfusionLoss
from keras_transfer.adaptation.domain_pairs import domain_pairs
from keras_transfer.adaptation.gradient_reversal import GradientReversal

__all__ = [
    "CoralLoss",
    "DomainAdaptationModel",
    "DomainAdaptationSchedule",
    "DomainConfusionLoss",
    "GradientReversal",
    "MMDLoss",
    "default_domain_head",
    "domain_pairs",
]
