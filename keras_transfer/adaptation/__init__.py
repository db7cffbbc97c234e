"""Unsupervised domain adaptation: DANN, deep domain confusion, CORAL and MMD."""

from keras_transfer.adaptation.gradient_reversal import GradientReversal

__all__ = ["GradientReversal"]
