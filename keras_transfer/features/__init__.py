from keras_transfer.features.feature_cache import FeatureCache
from keras_transfer.features.process_shard import process_shard

__all__ = ["FeatureCache", "process_shard"]
