from keras_transfer.groups.layer_groups import LayerGroup, describe_groups, layer_groups

__all__ = ["LayerGroup", "describe_groups", "layer_groups"]
