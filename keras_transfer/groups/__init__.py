from keras_transfer.groups.describe_groups import describe_groups
from keras_transfer.groups.layer_group import LayerGroup, LayerGroupPlan
from keras_transfer.groups.layer_groups import layer_groups

__all__ = ["LayerGroup", "LayerGroupPlan", "describe_groups", "layer_groups"]
