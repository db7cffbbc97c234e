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


def track_variable(layer: keras.layers.Layer, variable: keras.Variable) -> None:
    """Makes `layer` own `variable`, created outside its `add_weight`.

    For wrapping variables that already exist (a SavedModel's), which
    `add_weight` cannot adopt. Relies on `Layer._track_variable(variable)`,
    which files the variable under the layer's trainable or non-trainable
    weights by its `trainable` flag (and sets that flag to `False` while the
    layer is frozen), as `add_weight` does.
    """
    layer._track_variable(variable)


def call_outputs(layer: keras.layers.Layer) -> list[list]:
    """The symbolic outputs of each call of `layer` in a Functional graph, oldest first.

    One list of output tensors (flattened) per call: a model nested in two
    graphs has two entries, the latest nesting last. Relies on
    `Layer._inbound_nodes` (one `Node` per symbolic call) and
    `Node.output_tensors`.
    """
    return [list(node.output_tensors) for node in layer._inbound_nodes]


def build_at_init(layer: keras.layers.Layer) -> None:
    """Marks `layer` built from its `__init__`, for a layer whose variables all
    exist by then (a wrapped SavedModel's) and that defines no `build`.

    Relies on `Layer._build_at_init()`, which Keras' own layers of that kind
    (`keras.layers.TFSMLayer`, the activations, pooling) call at the end of
    their `__init__`: it sets `built`, runs `_post_build` and locks the layer's
    variable tracking, only when `build` is not overridden.
    """
    layer._build_at_init()
