from keras_transfer.optimizers.discriminative_lr import DiscriminativeLR

__all__ = ["DiscriminativeLR"]
