"""Layers: walking sublayers and the variables a layer could train."""

from __future__ import annotations

import keras


def flatten_layers(layer: keras.layers.Layer, include_self: bool = True) -> list:
    """Every layer nested in `layer` (depth first, each once), optionally itself.

    Relies on `Layer._flatten_layers(include_self=..., recursive=True)`, which
    Keras uses for `Model.layers`-independent traversal (it reaches layers
    held in attributes, lists and dicts, not only a Functional graph's nodes).
    """
    return list(layer._flatten_layers(include_self=include_self))


def trainable_capable_variables(layer: keras.layers.Layer) -> list:
    """The variables `layer` itself owns and would train were it trainable.

    Unlike `layer.trainable_variables`, this ignores the current `trainable`
    flag of the layer (and of the layers around it). Relies on Keras keeping
    the layer's own variables created with `trainable=True` in
    `Layer._trainable_variables` whatever the layer's flag.
    """
    return list(layer._trainable_variables)
