"""Unsupervised domain adaptation: DANN, deep domain confusion, CORAL and MMD."""

from keras_transfer.adaptation.discrepancy_losses import CoralLoss, MMDLoss
from keras_transfer.adaptation.domain_confusion_loss import DomainConfusionLoss
from keras_transfer.adaptation.gradient_reversal import GradientReversal

__all__ = ["CoralLoss", "DomainConfusionLoss", "GradientReversal", "MMDLoss"]
