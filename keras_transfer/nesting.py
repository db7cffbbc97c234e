"""`nested_layers`: every layer inside a model, at any depth."""

from __future__ import annotations

import keras

from keras_transfer._keras_internals.layers import flatten_layers


def nested_layers(layer: keras.layers.Layer, include_self: bool = False) -> list:
    """Every layer nested in `layer`, at any depth, each once.

    `Model.layers` lists only a model's top level: the layers inside a nested
    backbone, or inside a KerasHub block, are not in it. Use this to reach all
    of them, e.g. to change every `BatchNormalization` of a backbone. Input
    layers (which hold no weights) are left out.

    Args:
        layer: a layer or model.
        include_self: put `layer` itself first. Defaults to `False`.

    Returns:
        A list of layers.

    Example:

    >>> import keras
    >>> import keras_transfer as kt
    >>> block = keras.Sequential(
    ...     [keras.layers.Dense(4, name="dense"), keras.layers.BatchNormalization(name="bn")],
    ...     name="block",
    ... )
    >>> model = keras.Sequential([keras.Input((3,)), block, keras.layers.Dense(2, name="head")])
    >>> [sublayer.name for sublayer in model.layers]
    ['block', 'head']
    >>> sorted(sublayer.name for sublayer in kt.nested_layers(model))
    ['block', 'bn', 'dense', 'head']
    >>> for sublayer in kt.nested_layers(model):
    ...     if isinstance(sublayer, keras.layers.BatchNormalization):
    ...         sublayer.momentum = 0.9
    """
    return [
        sublayer
        for sublayer in flatten_layers(layer, include_self=include_self)
        if not isinstance(sublayer, keras.layers.InputLayer)
    ]
