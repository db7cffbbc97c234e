from keras_transfer.features.feature_cache import FeatureCache

__all__ = ["FeatureCache"]
